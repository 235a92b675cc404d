"""docs/architecture.md says what the code does: its phase table is the one
in fastgw/pipeline/phases.py, the README links it, and nothing in the repo
cites a design document that isn't in it."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

from fastgw.pipeline.phases import PHASES, Phase

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "architecture.md"


def _doc_rows() -> list[list[str]]:
    text = DOC.read_text()
    table = text.split("<!-- phase-table")[1].split("<!-- /phase-table -->")[0]
    rows = [line for line in table.splitlines() if line.startswith("| ") and not line.startswith("| #")]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]


def test_the_documented_phase_table_is_the_code_s():
    expected = [[str(int(p.phase)), p.phase.name.lower(), p.slot, p.work, p.may_answer] for p in PHASES]
    assert _doc_rows() == expected


def test_phases_are_numbered_in_order():
    assert [int(p) for p in Phase] == list(range(1, len(Phase) + 1))


def test_readme_links_the_architecture_doc_and_nothing_cites_outside_documents():
    assert "docs/architecture.md" in (REPO / "README.md").read_text()
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout.split()
    citing = []
    for name in tracked:
        path = REPO / name
        if path.suffix not in (".py", ".pyx", ".pxd", ".pxi", ".md", ".sh", ".yaml", ".toml") or not path.exists():
            continue
        if name == "tests/pipeline/test_architecture_doc.py":
            continue
        text = path.read_text(errors="replace")
        if re.search(r"DESIGN\.md|STYLE\.md|\.\./shared/(?!bench)", text):
            citing.append(name)
    assert citing == [], f"files citing documents that are not in the repository: {citing}"
