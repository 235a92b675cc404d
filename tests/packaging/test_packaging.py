"""What ships beside the code: the wheel `pip wheel .` builds, the
Dockerfile, the systemd unit and the Kubernetes manifest, each checked with
the tool its users run where it is installed here (pip, systemd-analyze,
fastgw check), and for what the README promises of it."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
FASTGW = Path(sys.executable).parent / "fastgw"


def _tracked_copy(dest: Path) -> Path:
    """The repository's tracked files only (a clean checkout: no .so, no .c)."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
    for name in filter(None, files.decode().split("\0")):
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, target)
    return dest


@pytest.mark.timeout(600)
def test_pip_wheel_builds_a_wheel_with_the_compiled_modules(tmp_path):
    """`pip wheel .` from a clean checkout (40-60 s here: it compiles the
    Cython modules). --no-build-isolation reuses this venv's Cython and
    setuptools instead of fetching them, which a test must not do."""
    src = _tracked_copy(tmp_path / "src")
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                             "--wheel-dir", str(tmp_path / "dist"), str(src)],
                            capture_output=True, text=True, timeout=560)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    [wheel] = (tmp_path / "dist").glob("fastgw-*.whl")
    assert re.fullmatch(r"fastgw-[\d.]+-cp3\d+-cp3\d+-linux_\w+\.whl", wheel.name), wheel.name
    names = set(zipfile.ZipFile(wheel).namelist())
    for module in ("proxy", "headers", "router", "deadlines", "ratelimit", "limiter", "concurrency", "metrics",
                   "accesslog", "codes"):
        assert any(re.fullmatch(rf"fastgw/_native/{module}\.cpython-.*\.so", n) for n in names), module
    assert "fastgw/admin/openapi.json" in names
    generated_c = sorted(n for n in names if n.endswith(".c"))
    assert generated_c == [], f"Cython's generated C shipped in the wheel: {generated_c}"
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "fastgw = fastgw.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def _stages(dockerfile: str) -> list[list[str]]:
    stages: list[list[str]] = []
    for line in re.sub(r"\\\n", " ", dockerfile).splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.upper().startswith("FROM "):
            stages.append([])
        stages[-1].append(line)
    return stages


def test_dockerfile_is_multi_stage_non_root_without_a_compiler_in_the_image():
    """Read, not built: docker is not runnable on the test machines (checked:
    `docker info` fails), so the structure is what is checked."""
    stages = _stages((REPO / "Dockerfile").read_text())
    assert len(stages) >= 2
    build, final = stages[0], stages[-1]
    assert any("build-essential" in line for line in build) and any("pip wheel" in line for line in build)
    text = "\n".join(final)
    assert not re.search(r"build-essential|gcc|python3-dev|apt-get install", text), "a compiler in the final image"
    assert "--no-index" in text and "COPY --from=build /wheels" in text      # installs the built wheels only
    [user] = [line for line in final if line.startswith("USER ")]
    assert user.split()[1].split(":")[0] not in ("0", "root")
    assert final[-2:] == ['ENTRYPOINT ["fastgw"]', 'CMD ["run", "--config", "/etc/fastgw/gateway.yaml"]']
    assert any("/livez" in line for line in final if line.startswith(("HEALTHCHECK", "CMD python")))
    copied = [line.split()[1] for stage in stages for line in stage if line.startswith("COPY ") and "--from" not in line]
    for source in copied:
        assert (REPO / source).exists(), source


def test_the_systemd_unit(tmp_path):
    unit = (REPO / "packaging" / "systemd" / "fastgw.service").read_text()
    service = dict(line.split("=", 1) for line in unit.split("[Service]")[1].split("[Install]")[0].splitlines()
                   if "=" in line and not line.startswith("#"))
    assert service["Type"] == "notify"                         # fastgw/server/notify.py sends READY=1
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["ExecStart"].split()[1:3] == ["run", "--config"]
    assert int(service["TimeoutStopSec"]) > 5 + 30   # the default drain_delay + drain
    analyze = shutil.which("systemd-analyze")
    if analyze is None or not FASTGW.exists():
        pytest.skip("systemd-analyze (or the installed fastgw) not available")
    # verify checks that the executables exist: point them at this venv's.
    local = tmp_path / "fastgw.service"
    local.write_text(unit.replace("/opt/fastgw/bin/fastgw", str(FASTGW)))
    result = subprocess.run([analyze, "verify", str(local)], capture_output=True, text=True, timeout=60,
                            env={**os.environ, "SYSTEMD_LOG_LEVEL": "warning"})
    problems = [line for line in (result.stdout + result.stderr).splitlines()
                if "fastgw.service" in line and str(local) in line or "fastgw.service:" in line]
    assert result.returncode == 0 and not problems, result.stdout + result.stderr


def test_the_kubernetes_manifest_probes_what_its_config_serves(tmp_path):
    docs = list(yaml.safe_load_all((REPO / "packaging" / "kubernetes" / "fastgw.yaml").read_text()))
    kinds = {d["kind"]: d for d in docs}
    assert set(kinds) == {"ConfigMap", "Deployment", "Service"}
    gateway = kinds["ConfigMap"]["data"]["gateway.yaml"]
    # The embedded config passes fastgw check, with the token the Secret supplies.
    path = tmp_path / "gateway.yaml"
    path.write_text(gateway)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FASTGW_")}
    env.update(PYTHONPATH=str(REPO), FASTGW_ADMIN_TOKEN="a-token-of-24-characters")
    check = subprocess.run([sys.executable, "-m", "fastgw", "check", "--config", str(path)],
                           capture_output=True, text=True, timeout=60, env=env)
    assert check.returncode == 0, check.stderr
    config = yaml.safe_load(gateway)
    admin_port = int(config["admin"]["address"].rsplit(":", 1)[1])
    http_port = int(config["listeners"][0]["address"].rsplit(":", 1)[1])
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": http_port, "admin": admin_port}
    assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "admin"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "admin"}
    timeouts = config["server"]["timeouts"]
    seconds = {k: int(v.rstrip("s")) for k, v in timeouts.items()}
    assert pod["terminationGracePeriodSeconds"] > seconds["drain_delay"] + seconds["drain"]
    assert pod["securityContext"]["runAsNonRoot"] is True
