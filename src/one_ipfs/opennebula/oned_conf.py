"""Register the ``ipfs`` drivers in ``oned.conf`` by editing the text, never by rewriting it.

An admin's ``oned.conf`` carries years of comments and local choices, so the edit touches only the
bytes it must: ``,ipfs`` appended to the driver list inside the ARGUMENTS strings of DATASTORE_MAD, TM_MAD
(``-d``) and MARKET_MAD (``-m``), and a marked block with the DS_MAD_CONF, TM_MAD_CONF and MARKET_MAD_CONF
vectors appended at the end. The block's
first line records which lists were extended, so that ``unregister`` removes exactly what ``register``
added and gives back the original bytes.

The syntax is OpenNebula's template syntax: ``NAME = value`` or ``NAME = [ KEY = value, ... ]`` (vectors
may span lines), values quoted with ``"`` or bare, ``#`` comments to the end of the line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from one_ipfs.errors import InvalidInput

DRIVER = "ipfs"
BEGIN = "# BEGIN one-ipfs"
END = "# END one-ipfs"
NO_FINAL_NEWLINE = "no-final-newline"
MANAGERS = ("DATASTORE_MAD", "TM_MAD", "MARKET_MAD")

DS_MAD_CONF = """DS_MAD_CONF = [ NAME = "ipfs", REQUIRED_ATTRS = "", PERSISTENT_ONLY = "NO",
    MARKETPLACE_ACTIONS = "export" ]
"""
TM_MAD_CONF = """TM_MAD_CONF = [ NAME = "ipfs", LN_TARGET = "SYSTEM", CLONE_TARGET = "SYSTEM", SHARED = "NO",
    DS_MIGRATE = "YES", ALLOW_ORPHANS = "YES",
    TM_MAD_SYSTEM = "ssh,local,shared",
    LN_TARGET_SSH = "SYSTEM", CLONE_TARGET_SSH = "SYSTEM", DISK_TYPE_SSH = "FILE",
    LN_TARGET_LOCAL = "SYSTEM", CLONE_TARGET_LOCAL = "SYSTEM", DISK_TYPE_LOCAL = "FILE",
    LN_TARGET_SHARED = "SYSTEM", CLONE_TARGET_SHARED = "SYSTEM", DISK_TYPE_SHARED = "FILE" ]
"""
"""The registration of docs/transfer.md: host-local disks, for ssh, local and shared system datastores."""
MARKET_MAD_CONF = """MARKET_MAD_CONF = [ NAME = "ipfs", SUNSTONE_NAME = "IPFS", REQUIRED_ATTRS = "",
    APP_ACTIONS = "create, delete, monitor" ]
"""
"""The registration of docs/marketplace.md: apps are published and listed through the catalogue."""

# The driver-list option of one_datastore, one_tm and one_market, short and long.
_DRIVER_LIST = {
    manager: re.compile(rf"(?:^|(?<=\s))(?:{options})(?:\s+|=)([^\s\"]+)")
    for manager, options in (
        ("DATASTORE_MAD", "-d|--ds-types"),
        ("TM_MAD", "-d|--tm-types"),
        ("MARKET_MAD", "-m|--market-types"),
    )
}
_TOKEN = re.compile(r'\s+|#[^\n]*|"(?:[^"\\]|\\.)*"|[\[\]=,]|[^\s\[\]=,#"]+')


@dataclass(frozen=True)
class Value:
    """A value as written: ``text`` without quotes, ``start``/``end`` the offsets of that text in the file."""

    text: str
    start: int
    end: int


@dataclass(frozen=True)
class Attribute:
    """A top-level attribute: a single value, or a vector of ``(KEY, Value)`` pairs."""

    name: str
    value: Value | None
    pairs: tuple[tuple[str, Value], ...]

    def get(self, key: str) -> Value | None:
        for name, value in self.pairs:
            if name.upper() == key:
                return value
        return None


@dataclass(frozen=True)
class Registration:
    """What ``register`` finds in a file: which ``-d`` lists and which vectors already name ``ipfs``."""

    listed: dict[str, bool]
    ds_mad_conf: bool
    tm_mad_conf: bool
    market_mad_conf: bool
    marked: bool

    @property
    def complete(self) -> bool:
        return all(self.listed.values()) and self.ds_mad_conf and self.tm_mad_conf and self.market_mad_conf


def parse(text: str) -> list[Attribute]:
    """The top-level attributes of an oned.conf, in file order, with the offsets of their values."""
    tokens = [(m.group(), m.start()) for m in _TOKEN.finditer(text) if not m.group()[0].isspace()]
    tokens = [(t, at) for t, at in tokens if not t.startswith("#")]
    attributes: list[Attribute] = []
    i = 0

    def expect(symbol: str) -> None:
        nonlocal i
        if i >= len(tokens) or tokens[i][0] != symbol:
            raise InvalidInput(f"oned.conf: expected {symbol!r} {_where(text, tokens, i)}")
        i += 1

    def value() -> Value:
        nonlocal i
        if i >= len(tokens) or tokens[i][0] in "[]=,":
            raise InvalidInput(f"oned.conf: expected a value {_where(text, tokens, i)}")
        token, at = tokens[i]
        i += 1
        if token.startswith('"'):
            return Value(token[1:-1], at + 1, at + len(token) - 1)
        return Value(token, at, at + len(token))

    while i < len(tokens):
        name = tokens[i][0]
        if name in "[]=," or name.startswith('"'):
            raise InvalidInput(f"oned.conf: expected an attribute name {_where(text, tokens, i)}")
        i += 1
        expect("=")
        if i < len(tokens) and tokens[i][0] == "[":
            i += 1
            pairs: list[tuple[str, Value]] = []
            while i < len(tokens) and tokens[i][0] != "]":
                key = tokens[i][0]
                i += 1
                expect("=")
                pairs.append((key, value()))
                if i < len(tokens) and tokens[i][0] == ",":
                    i += 1
            expect("]")
            attributes.append(Attribute(name, None, tuple(pairs)))
        else:
            attributes.append(Attribute(name, value(), ()))
    return attributes


def inspect(text: str) -> Registration:
    """Where ``ipfs`` stands in this file (raises InvalidInput when the driver managers cannot be found)."""
    attributes = parse(text)
    listed = {
        manager: DRIVER in _driver_list(_arguments(attributes, manager), manager)[0] for manager in MANAGERS
    }
    return Registration(
        listed=listed,
        ds_mad_conf=_has_conf(attributes, "DS_MAD_CONF"),
        tm_mad_conf=_has_conf(attributes, "TM_MAD_CONF"),
        market_mad_conf=_has_conf(attributes, "MARKET_MAD_CONF"),
        marked=_block(text) is not None,
    )


def register(text: str) -> str:
    """``text`` with ``ipfs`` registered; the same text when it already is (idempotent)."""
    state = inspect(text)
    if state.complete:
        return text
    if state.marked:
        # An earlier one-ipfs registered less (the marketplace came later): take its registration out and
        # write the whole one again, so that unregister still gives back the admin's original bytes.
        return register(unregister(text))
    attributes = parse(text)
    edits: list[tuple[int, int, str]] = []
    extended: list[str] = []
    for manager in MANAGERS:
        if state.listed[manager]:
            continue
        arguments = _arguments(attributes, manager)
        _, end = _driver_list(arguments, manager)
        edits.append((arguments.start + end, arguments.start + end, f",{DRIVER}"))
        extended.append(manager)
    for start, end, insert in sorted(edits, reverse=True):
        text = text[:start] + insert + text[end:]
    markers = " ".join(extended) or "-"
    separator = "\n"
    if text and not text.endswith("\n"):
        separator = "\n\n"
        markers += f" {NO_FINAL_NEWLINE}"
    block = f"{BEGIN}: added ipfs to the driver list of {markers}\n"
    block += "# (`one-ipfs uninstall` removes this block and those list entries)\n"
    if not state.ds_mad_conf:
        block += DS_MAD_CONF
    if not state.tm_mad_conf:
        block += TM_MAD_CONF
    if not state.market_mad_conf:
        block += MARKET_MAD_CONF
    block += f"{END}\n"
    return text + separator + block


def unregister(text: str) -> str:
    """``text`` without what ``register`` added: the original bytes when nothing else was changed."""
    found = _block(text)
    if found is None:
        return text
    start, end, header = found
    words = header.split()
    no_final_newline = NO_FINAL_NEWLINE in words
    extended = [word for word in words if word in MANAGERS]
    cut = start - (2 if no_final_newline else 1)
    if cut < 0 or text[cut:start] != "\n" * (start - cut):
        cut = start
    text = text[:cut] + text[end:]
    attributes = parse(text)
    edits = []
    for manager in extended:
        arguments = _arguments(attributes, manager)
        names, list_end = _driver_list(arguments, manager)
        listing = arguments.text[:list_end]
        suffix = f",{DRIVER}"
        if listing.endswith(suffix):
            at = arguments.start + list_end - len(suffix)
            edits.append((at, at + len(suffix)))
        elif DRIVER in names:
            raise InvalidInput(f"oned.conf: cannot remove ipfs from the {manager} driver list: it was moved")
    for cut_start, cut_end in sorted(edits, reverse=True):
        text = text[:cut_start] + text[cut_end:]
    return text


def _arguments(attributes: list[Attribute], manager: str) -> Value:
    """The ARGUMENTS value of the one active ``manager`` vector."""
    found = [a for a in attributes if a.name.upper() == manager and a.value is None]
    if not found:
        raise InvalidInput(f"oned.conf has no {manager} section: is this OpenNebula's oned.conf?")
    if len(found) > 1:
        raise InvalidInput(f"oned.conf has {len(found)} {manager} sections: leave one, then install again")
    arguments = found[0].get("ARGUMENTS")
    if arguments is None:
        raise InvalidInput(f"oned.conf: the {manager} section has no ARGUMENTS")
    return arguments


def _driver_list(arguments: Value, manager: str) -> tuple[list[str], int]:
    """The drivers of the manager's list option and the offset (inside ARGUMENTS) where that list ends."""
    match = _DRIVER_LIST[manager].search(arguments.text)
    if match is None:
        option = "-m" if manager == "MARKET_MAD" else "-d"
        raise InvalidInput(
            f'oned.conf: no "{option}" driver list in the {manager} ARGUMENTS = "{arguments.text}"'
        )
    return [name.strip() for name in match.group(1).split(",")], match.end(1)


def _has_conf(attributes: list[Attribute], section: str) -> bool:
    for attribute in attributes:
        name = attribute.get("NAME")
        if attribute.name.upper() == section and name is not None and name.text == DRIVER:
            return True
    return False


def _block(text: str) -> tuple[int, int, str] | None:
    """(start, end, header) of the marked block, ``end`` past its last newline."""
    start = text.find(f"\n{BEGIN}")
    start = 0 if text.startswith(BEGIN) else start + 1 if start >= 0 else -1
    if start < 0:
        return None
    header_end = text.find("\n", start)
    stop = text.find(f"\n{END}", start)
    if header_end < 0 or stop < 0:
        raise InvalidInput(f"oned.conf: the one-ipfs block has no {END!r} line; fix the file by hand")
    end = text.find("\n", stop + 1)
    end = len(text) if end < 0 else end + 1
    return start, end, text[start + len(BEGIN) : header_end]


def _where(text: str, tokens: list[tuple[str, int]], i: int) -> str:
    if i >= len(tokens):
        return "at the end of the file"
    return f"at line {text.count(chr(10), 0, tokens[i][1]) + 1}"
