"""Reading a watched endpoints file (`clusters.NAME.endpoints_file`).

The file holds what `endpoints:` holds in the config: a list of URLs or
`{url, weight}` entries, as YAML or JSON (JSON is YAML), optionally under an
`endpoints:` key. The config loader reads it once (`fastgw check` and start-up
report a bad file like any config error); each worker's watcher
(fastgw/upstream/discovery.py) reads it again on every change.

Errors name the file and the entry: `eps.yaml: [1].url: port 99999 is out of
range (...)`. An empty list is refused: a half-written file (a writer that
truncates before writing) reads as empty, and dropping every endpoint is
never what a discovery tool meant to say.
"""
from __future__ import annotations

from functools import partial

from fastgw.config import yaml_text
from fastgw.config.errors import ErrorList, item
from fastgw.config.model import Endpoint
from fastgw.config.reader import Section, parse_or_record
from fastgw.config.schema import URL_HINT, describe, format_address, parse_endpoint_url, parse_int

FILE_HINT = ("write a list of endpoints as in the config, e.g. [http://10.0.0.1:8080, "
             "{url: http://10.0.0.2:8080, weight: 2}]")
ENTRY_KEYS = ("url", "weight")


class EndpointsFileError(Exception):
    """The file can't be used. `.problems` are (where in the file or None,
    problem, hint); `.lines` the same as `PATH: where: problem (hint)`."""

    def __init__(self, path: str, problems: list[tuple[str | None, str, str]]) -> None:
        self.path = path
        self.problems = problems
        self.lines = [f"{path}: {where + ': ' if where else ''}{problem} ({hint})"
                      for where, problem, hint in problems]
        super().__init__("; ".join(self.lines))


class _Errors(ErrorList):
    """An ErrorList that also keeps each problem's parts."""

    def __init__(self, source: str) -> None:
        super().__init__(source)
        self.problems: list[tuple[str | None, str, str]] = []

    def add(self, keypath: str, problem: str, hint: str) -> None:
        super().add(keypath, problem, hint)
        self.problems.append((keypath, problem, hint))


def read_endpoints_file(path: str) -> tuple[Endpoint, ...]:
    """The endpoints listed in `path`, or EndpointsFileError."""
    try:
        document, _ = yaml_text.parse(yaml_text.read_text(path))
    except yaml_text.YamlProblem as problem:
        hint = {"file not found": "write the file, or fix the path"}.get(problem.problem, problem.hint)
        text = problem.problem
        if text.startswith("invalid YAML: "):  # JSON is YAML: say both, as the docs do
            text, hint = "invalid YAML/JSON: " + text.removeprefix("invalid YAML: "), FILE_HINT
        raise EndpointsFileError(path, [(problem.where, text, hint)]) from None
    return parse_endpoints_document(document, path)


def parse_endpoints_document(document: object, source: str) -> tuple[Endpoint, ...]:
    errors = _Errors(source)
    keypath = ""
    if isinstance(document, dict) and set(document) == {"endpoints"}:
        document, keypath = document["endpoints"], "endpoints"
    if not isinstance(document, list):
        what = "the file is empty" if document is None else f"expected a list of endpoints, got {describe(document)}"
        errors.add(keypath or "(top level)", what, FILE_HINT)
        raise EndpointsFileError(source, errors.problems)
    if not document:
        errors.add(keypath or "(top level)", "the list is empty",
                   "list at least one endpoint; the last good set is kept meanwhile")
    endpoints: list[Endpoint] = []
    first_index: dict[tuple[str, int], int] = {}
    for index, raw in enumerate(document):
        entry_path = item(keypath, index)
        endpoint = _read_entry(raw, entry_path, errors)
        if endpoint is None:
            continue
        address = (endpoint.host, endpoint.port)
        if address in first_index:
            errors.add(entry_path, f"{format_address(*address)} is listed twice, first as [{first_index[address]}]",
                       "list each endpoint once; raise its weight to send it more traffic")
            continue
        first_index[address] = index
        endpoints.append(endpoint)
    if errors:
        raise EndpointsFileError(source, errors.problems)
    return tuple(endpoints)


def _read_entry(raw: object, keypath: str, errors: ErrorList) -> Endpoint | None:
    if isinstance(raw, str):
        host, port = parse_or_record(errors, keypath, parse_endpoint_url, raw, ("", 0))
        return Endpoint(host=host, port=port) if port else None
    entry = Section(raw, keypath, errors, ENTRY_KEYS, hint="write a URL string or {url: http://host:port, weight: 1}")
    host, port = entry.require("url", parse_endpoint_url, ("", 0), URL_HINT)
    weight = entry.parse("weight", partial(parse_int, minimum=1, example=2), 1)
    return Endpoint(host=host, port=port, weight=weight) if port else None
