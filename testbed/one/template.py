"""OpenNebula's template syntax, as oned parses it (``src/parsers/template_parser.l``, ``template_syntax.y``).

Drivers write template text in two places the simulator reads: ``one.image.update``'s template and the stdout
of a datastore ``monitor``. Reproducing oned's rules (not a friendlier superset) is the point: an attribute
that a driver escapes the wrong way must come out as wrong here as it would in OpenNebula. The rules:

- ``NAME = value`` where value is ``"double quoted"`` (may span lines) or a run of characters other than
  ``=#,[]``, blanks and newline; ``NAME =`` at the end of a line sets an empty value.
- ``NAME = [ A = "x", B = y ]`` is a vector attribute; names are upper-cased, values kept verbatim.
- Inside quotes only ``\\"`` is an escape (it becomes ``"``); a backslash is otherwise kept as is, so
  ``\\\\`` stays two backslashes.
- A value line containing ``]]>`` aborts the parse (it could close a CDATA section in the XML).
- ``#`` starts a comment line; an attribute name may repeat (``DISK`` twice gives two attributes).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

Value = str | dict[str, str]
Attribute = tuple[str, Value]


class TemplateSyntaxError(ValueError):
    """Text that oned's template parser rejects; ``str()`` mimics its message."""


_COMMENT = re.compile(r"[ \t]*#.*\n")
_BLANKS = re.compile(r"[ \t\n]+")
_VARIABLE = re.compile(r"[A-Za-z0-9_]+")
_EQUAL_EMPTY = re.compile(r"[ \t]*=[ \t]*\n")
_EQUAL = re.compile(r"[ \t]*=[ \t]*")
_COMMA = re.compile(r"[ \t\n]*,[ \t\n]*")
_CBRACKET = re.compile(r"[ \t\n]*\][ \t\n]*")
_OBRACKET = re.compile(r"[ \t]*\[[ \t\n]*")
_QUOTED = re.compile(r'"((?:\\"|[^"])*)"')
_UNQUOTED = re.compile(r"[^=#\s,\[\]]+")
_CDATA_LINE = re.compile(r".*\]\]>.*")


@dataclass
class _Token:
    kind: str
    text: str
    line: int


def _tokens(text: str) -> list[_Token]:
    """Split ``text`` the way the flex scanner does, including its VALUE start condition."""
    tokens: list[_Token] = []
    pos = 0
    in_value = False
    if not text.endswith("\n"):
        text += "\n"
    while pos < len(text):
        line = text.count("\n", 0, pos) + 1
        if in_value:
            in_value = False
            bracket = _OBRACKET.match(text, pos)
            if bracket:
                tokens.append(_Token("OBRACKET", "[", line))
                pos = bracket.end()
                continue
            cdata = _CDATA_LINE.match(text, pos)
            quoted = _QUOTED.match(text, pos)
            if cdata and (not quoted or cdata.end() >= quoted.end()):
                tokens.append(_Token("CCDATA", cdata.group(0), line))
                pos = cdata.end()
                continue
            if quoted:
                tokens.append(_Token("STRING", quoted.group(1).replace('\\"', '"'), line))
                pos = quoted.end()
                continue
            bare = _UNQUOTED.match(text, pos)
            if bare:
                tokens.append(_Token("STRING", bare.group(0), line))
                pos = bare.end()
                continue
            raise TemplateSyntaxError(f"syntax error, unexpected character at line {line}")
        for kind, pattern in (
            ("COMMENT", _COMMENT),
            ("EQUAL_EMPTY", _EQUAL_EMPTY),
            ("EQUAL", _EQUAL),
            ("COMMA", _COMMA),
            ("CBRACKET", _CBRACKET),
            ("BLANKS", _BLANKS),
            ("VARIABLE", _VARIABLE),
        ):
            match = pattern.match(text, pos)
            if match and match.end() > pos:
                if kind not in ("COMMENT", "BLANKS"):
                    tokens.append(_Token(kind, match.group(0), line))
                in_value = kind == "EQUAL"
                pos = match.end()
                break
        else:
            raise TemplateSyntaxError(
                f"syntax error, unexpected {text[pos]!r} at line {line}, columns {pos}:{pos + 1}"
            )
    return tokens


def parse(text: str) -> list[Attribute]:
    """Parse template text into (NAME, value) pairs in file order; raises TemplateSyntaxError."""
    tokens = _tokens(text)
    attributes: list[Attribute] = []
    index = 0

    def expect(kind: str) -> _Token:
        nonlocal index
        if index >= len(tokens) or tokens[index].kind != kind:
            found = tokens[index] if index < len(tokens) else None
            where = f" at line {found.line}" if found else " at end of input"
            raise TemplateSyntaxError(
                f"syntax error, unexpected {found.kind if found else '$end'}, expecting {kind}{where}"
            )
        index += 1
        return tokens[index - 1]

    while index < len(tokens):
        name = expect("VARIABLE").text.upper()
        if index < len(tokens) and tokens[index].kind == "EQUAL_EMPTY":
            index += 1
            attributes.append((name, ""))
            continue
        expect("EQUAL")
        if index < len(tokens) and tokens[index].kind == "CCDATA":
            raise TemplateSyntaxError(f"value of {name} contains ']]>' at line {tokens[index].line}")
        if index < len(tokens) and tokens[index].kind == "OBRACKET":
            index += 1
            vector: dict[str, str] = {}
            if index < len(tokens) and tokens[index].kind == "CBRACKET":
                index += 1
                attributes.append((name, vector))
                continue
            while True:
                key = expect("VARIABLE").text.upper()
                expect("EQUAL")
                value = expect("STRING").text
                vector.setdefault(key, value)
                if index < len(tokens) and tokens[index].kind == "COMMA":
                    index += 1
                    continue
                expect("CBRACKET")
                break
            attributes.append((name, vector))
            continue
        attributes.append((name, expect("STRING").text))
    return attributes


def quote(value: str) -> str:
    """A value in the only escaping oned understands: double quotes, ``"`` written as ``\\"``."""
    return '"' + value.replace('"', '\\"') + '"'


def render(attributes: Iterable[Attribute] | Mapping[str, Value]) -> str:
    """Template text for ``attributes``, one attribute per line (what ``oneimage update`` reads)."""
    items = attributes.items() if isinstance(attributes, Mapping) else attributes
    lines = []
    for name, value in items:
        if isinstance(value, dict):
            inner = ",\n  ".join(f"{key} = {quote(val)}" for key, val in value.items())
            lines.append(f"{name} = [\n  {inner} ]")
        else:
            lines.append(f"{name} = {quote(value)}")
    return "\n".join(lines) + "\n"


def merge(current: Sequence[Attribute], update: Sequence[Attribute]) -> list[Attribute]:
    """``Template::merge`` (``--append``): every name in ``update`` replaces all attributes of that name."""
    names = {name for name, _ in update}
    return [(name, value) for name, value in current if name not in names] + list(update)
