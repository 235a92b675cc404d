"""Reading a YAML file into a document, with every failure as a `YamlProblem`.

The config loader and the endpoints-file reader both read YAML written by
people (or by tools); whatever is wrong with the bytes must come out as a
problem with a position and a hint, never as an exception of PyYAML or of
Python itself: `fastgw check` would print a traceback and a reload would be
refused as an internal failure (500) instead of an invalid config (400).

What is checked, in order: the file can be opened and is not too large
(`/dev/zero` must not be read forever); it is UTF-8 (the first bad byte is
named); it holds no character YAML forbids (PyYAML's own error has no line);
it parses; it nests at most MAX_DEPTH levels (PyYAML recurses per level and
would hit Python's recursion limit); no scalar fails to construct (an
integer of 5,000 digits, a date like 2001-02-30, a lone surrogate escape).
"""
from __future__ import annotations

import codecs
import re

import yaml

# A config with 10,000 routes is about 2 MiB; PyYAML (pure Python) reads
# roughly 1 MiB a second, so this bounds start-up and reload time too.
MAX_FILE_BYTES = 8 * 1024 * 1024
# The deepest key in the schema is 5 levels down; plugin configs may nest more.
MAX_DEPTH = 64

YAML_HINT = "check the indentation there, and quote values that contain ': ', '#', '{' or '['"
# The characters PyYAML's reader refuses (yaml.reader.Reader.NON_PRINTABLE).
_NOT_ALLOWED = re.compile("[^\x09\x0A\x0D\x20-\x7E\x85\xA0-\uD7FF\uE000-\uFFFD\U00010000-\U0010FFFF]")
_SURROGATE = re.compile("[\uD800-\uDFFF]")
_INT_TAG = "tag:yaml.org,2002:int"


class YamlProblem(Exception):
    """`where` is "line L, column C" (or None when the whole file is meant)."""

    def __init__(self, where: str | None, problem: str, hint: str) -> None:
        super().__init__(f"{where + ': ' if where else ''}{problem} ({hint})")
        self.where = where
        self.problem = problem
        self.hint = hint


def read_text(path: str, *, max_bytes: int = MAX_FILE_BYTES) -> str:
    """The file's text, decoded as UTF-8 (a leading BOM dropped)."""
    try:
        with open(path, "rb") as file:
            data = file.read(max_bytes + 1)
    except FileNotFoundError:
        raise YamlProblem(None, "file not found", "check the path") from None
    except IsADirectoryError:
        raise YamlProblem(None, "is a directory", "give the path of the YAML file itself") from None
    except PermissionError:
        raise YamlProblem(None, "cannot read: permission denied",
                          "make it readable by the user fastgw runs as") from None
    except OSError as error:
        raise YamlProblem(None, f"cannot read: {error.strerror or error}",
                          "check the path and its permissions") from None
    except ValueError:  # open() refuses a path with a NUL in it
        raise YamlProblem(None, "the path contains a NUL character", "check the path") from None
    if len(data) > max_bytes:
        raise YamlProblem(None, f"larger than {max_bytes // (1024 * 1024)} MiB",
                          "is it the right file? a config of 10,000 routes is about 2 MiB")
    if data.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise YamlProblem("line 1, column 1", "the file is UTF-16 or UTF-32 text", "save it as UTF-8")
    data = data.removeprefix(codecs.BOM_UTF8)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        column = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
        raise YamlProblem(f"line {line}, column {column}",
                          f"not a UTF-8 text file: byte 0x{data[error.start]:02x} there is not UTF-8",
                          "a config is UTF-8 YAML text; re-save it as UTF-8, or remove that byte") from None
    return text


def parse(text: str) -> tuple[object, list[tuple[str, int, int]]]:
    """(the document, its duplicate keys as (key, line, first line))."""
    bad = _NOT_ALLOWED.search(text)
    if bad:
        raise YamlProblem(_position(text, bad.start()), f"the character {_name(bad.group())} is not allowed in YAML",
                          "remove it (an editor or a copy and paste may have put it there); of the control "
                          "characters only tab, CR and LF may appear, and \\xNN escapes in double quotes")
    try:
        loader = _StrictLoader(text)
    except yaml.YAMLError as error:  # the reader checks the text when constructed
        raise _problem_of(error, text) from None
    try:
        document = loader.get_single_data()
    except yaml.YAMLError as error:
        raise _problem_of(error, text) from None
    except RecursionError:  # MAX_DEPTH keeps below it; a safety net for deep alias chains
        raise YamlProblem(None, "nested too deeply", f"a config nests far fewer than {MAX_DEPTH} levels") from None
    finally:
        loader.dispose()
    return document, loader.duplicate_keys


class _MarkedProblem(yaml.constructor.ConstructorError):
    """A problem this loader found, with its own hint (not the syntax one)."""

    def __init__(self, problem: str, hint: str, mark) -> None:
        super().__init__(None, None, problem, mark)
        self.hint = hint


# Constructs PyYAML only finds unfinished once it has read past them: an
# unclosed [ or {, an unterminated quote, a key without ':'. The problem mark
# is then where the reader gave up, usually the start of the next line (or
# the end of the file), one line or more after the mistake; the context mark
# is where the construct began, which is where the user has to look.
_STARTED_EARLIER = {"flow sequence": "the [ list that starts here is not closed",
                    "flow mapping": "the { mapping that starts here is not closed",
                    "quoted scalar": "the quoted string that starts here is not closed",
                    "simple key": "the key that starts here has no ':' after it"}


def _where(mark) -> str:
    return f"line {mark.line + 1}, column {mark.column + 1}"


def _problem_of(error: yaml.YAMLError, text: str) -> YamlProblem:
    problem_mark = getattr(error, "problem_mark", None)
    context_mark = getattr(error, "context_mark", None)
    context = getattr(error, "context", None)
    mark = problem_mark or context_mark
    if mark is not None:
        where = _where(mark)
    elif isinstance(error, yaml.reader.ReaderError):
        where = _position(text, error.position)
    else:
        where = None
    if isinstance(error, yaml.reader.ReaderError):
        problem = f"the character {_name(chr(error.character))} is not allowed in YAML" \
            if isinstance(error.character, int) else str(error.reason)
    else:
        problem = getattr(error, "problem", None) or str(error)
        if (context and problem_mark is not None and context_mark is not None
                and context_mark.line < problem_mark.line
                and (started := next((text for c, text in _STARTED_EARLIER.items() if c in context), None))):
            where = _where(context_mark)
            problem = f"{started} ({problem} at {_where(problem_mark)})"
        elif context:
            problem = f"{problem}, {context}"
    return YamlProblem(where, f"invalid YAML: {problem}", getattr(error, "hint", YAML_HINT))


def _position(text: str, index: int) -> str:
    line = text.count("\n", 0, index) + 1
    return f"line {line}, column {index - (text.rfind(chr(10), 0, index) + 1) + 1}"


def _name(char: str) -> str:
    """How to show a character the user cannot see: U+0001, or U+0000 (NUL)."""
    code = ord(char)
    names = {0: "NUL", 0x1B: "ESC", 0x7F: "DEL", 0xFEFF: "byte order mark"}
    label = names.get(code) or ("a control character" if code < 0x20 or 0x80 <= code < 0xA0 else None)
    return f"U+{code:04X}" + (f" ({label})" if label else "")


class _StrictLoader(yaml.SafeLoader):
    """safe_load, plus a record of duplicate mapping keys, a bound on nesting,
    and scalar construction failures turned into marked YAML errors.

    Plain YAML keeps the last of two equal keys without a word, so a second
    `users:` cluster would silently replace the first.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicate_keys: list[tuple[str, int, int]] = []  # (key, line, first line)
        self._depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _MarkedProblem(f"nested more than {MAX_DEPTH} levels deep",
                                     "a config nests a few levels; is a bracket left open?",
                                     self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_object(self, node, deep=False):
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, OverflowError) as error:
            # int('1' * 5000) and date(2001, 2, 30) raise these, without a position.
            if node.tag == _INT_TAG:
                problem = f"the number {str(node.value)[:20]}... has {len(str(node.value))} digits"
                hint = "no setting needs a number that large"
            else:
                problem = f"cannot read {str(node.value)[:40]!r} as {node.tag.rpartition(':')[2]}: {error}"
                hint = "fix the value, or quote it to keep it a string"
            raise _MarkedProblem(problem, hint, node.start_mark) from None

    def construct_yaml_str(self, node):
        value = super().construct_yaml_str(node)
        # "\ud800" in double quotes gives a lone surrogate, which no encoder
        # (UTF-8 logs, JSON answers, header bytes) accepts later.
        if _SURROGATE.search(value):
            raise _MarkedProblem("a \\uD800-\\uDFFF escape is half a character (a lone surrogate)",
                                 "write the whole character, or its \\UXXXXXXXX escape", node.start_mark)
        return value

    def construct_mapping(self, node, deep=False):
        first_line: dict[str, int] = {}
        for key_node, _ in node.value:
            # `<<` merges are meant to be overridden by the keys next to them.
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            line = key_node.start_mark.line + 1
            if key_node.value in first_line:
                self.duplicate_keys.append((key_node.value, line, first_line[key_node.value]))
            first_line.setdefault(key_node.value, line)
        return super().construct_mapping(node, deep=deep)


_StrictLoader.add_constructor("tag:yaml.org,2002:str", _StrictLoader.construct_yaml_str)
