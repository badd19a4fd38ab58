"""IPFS paths and CIDs: what users may put in an image's PATH or SOURCE, parsed and checked.

Everything here comes from an OpenNebula template and is treated as hostile: input is capped, CIDs
are decoded and checked structurally (multibase, CID version, codec, multihash length) rather than
matched by pattern, and path segments may not hold anything that could confuse a shell, a URL,
OpenNebula's ``host:path`` arguments or a later Unicode normalisation. The accepted multibases are
the ASCII ones Kubo decodes, so an IPFS path that parses here is one the node can resolve.

Standard library only and Python 3.9 compatible: hosts ship this module too.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from one_ipfs.errors import InvalidIpfsPath

MAX_PATH = 4096
MAX_SEGMENT_BYTES = 255
MAX_INLINED_KEY = 42
ACCEPTED_FORMS = (
    "/ipfs/<cid>[/path], /ipns/<name>[/path], fs:/ipfs/<cid>[/path], fs:/ipns/<name>[/path], "
    "ipfs://<cid>[/path] or ipns://<name>[/path]"
)
_FORMS = (
    ("/ipfs/", "ipfs"),
    ("/ipns/", "ipns"),
    ("fs:/ipfs/", "ipfs"),
    ("fs:/ipns/", "ipns"),
    ("ipfs://", "ipfs"),
    ("ipns://", "ipns"),
)
_PREFIXES = tuple(prefix for prefix, _ in _FORMS)

IDENTITY = 0x00
SHA2_256 = 0x12
DAG_PB = 0x70
RAW = 0x55
LIBP2P_KEY = 0x72

# Codecs a CID may carry: cbor, raw, dag-pb, dag-cbor, libp2p-key, git-raw, dag-jose, dag-json, json.
CODECS = frozenset({0x51, 0x55, DAG_PB, 0x71, LIBP2P_KEY, 0x78, 0x85, 0x0129, 0x0200})

# Hash functions Kubo verifies, with the digest lengths each can produce (SHA-1 is refused as broken).
HASHES: dict[int, tuple[str, range]] = {
    IDENTITY: ("identity", range(129)),
    SHA2_256: ("sha2-256", range(32, 33)),
    0x13: ("sha2-512", range(64, 65)),
    0x14: ("sha3-512", range(64, 65)),
    0x15: ("sha3-384", range(48, 49)),
    0x16: ("sha3-256", range(32, 33)),
    0x17: ("sha3-224", range(28, 29)),
    0x1B: ("keccak-256", range(32, 33)),
    0x1D: ("keccak-512", range(64, 65)),
    0x1E: ("blake3", range(32, 65)),
    0x20: ("sha2-384", range(48, 49)),
    0x56: ("dbl-sha2-256", range(32, 33)),
    0xB220: ("blake2b-256", range(32, 33)),
    0xB240: ("blake2b-512", range(64, 65)),
    0xB260: ("blake2s-256", range(32, 33)),
}

# Characters no path segment may hold: shell and glob metacharacters, quotes, URL delimiters, the
# ``host:path`` separator, and ``/`` (which a segment can only hold after Unicode normalisation).
_FORBIDDEN = frozenset("\"'`$;|&<>()[]{}*?!#\\:/")
_DNS_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


@dataclass(frozen=True)
class _Multibase:
    """One multibase: ``bits`` per character for RFC 4648 bit packing, 0 for positional bases."""

    name: str
    alphabet: str
    bits: int
    pad: bool = False


_B32 = "abcdefghijklmnopqrstuvwxyz234567"
_B32HEX = "0123456789abcdefghijklmnopqrstuv"
_B36 = "0123456789abcdefghijklmnopqrstuvwxyz"
_B58BTC = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58FLICKR = "123456789abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ"
_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

_BASES: dict[str, _Multibase] = {
    "0": _Multibase("base2", "01", 1),
    "f": _Multibase("base16", "0123456789abcdef", 4),
    "F": _Multibase("base16upper", "0123456789ABCDEF", 4),
    "b": _Multibase("base32", _B32, 5),
    "B": _Multibase("base32upper", _B32.upper(), 5),
    "c": _Multibase("base32pad", _B32, 5, pad=True),
    "C": _Multibase("base32padupper", _B32.upper(), 5, pad=True),
    "v": _Multibase("base32hex", _B32HEX, 5),
    "V": _Multibase("base32hexupper", _B32HEX.upper(), 5),
    "t": _Multibase("base32hexpad", _B32HEX, 5, pad=True),
    "T": _Multibase("base32hexpadupper", _B32HEX.upper(), 5, pad=True),
    "k": _Multibase("base36", _B36, 0),
    "K": _Multibase("base36upper", _B36.upper(), 0),
    "z": _Multibase("base58btc", _B58BTC, 0),
    "Z": _Multibase("base58flickr", _B58FLICKR, 0),
    "m": _Multibase("base64", _B64 + "+/", 6),
    "M": _Multibase("base64pad", _B64 + "+/", 6, pad=True),
    "u": _Multibase("base64url", _B64 + "-_", 6),
    "U": _Multibase("base64urlpad", _B64 + "-_", 6, pad=True),
}
MULTIBASES = tuple(_BASES)


@dataclass(frozen=True)
class Cid:
    """A structurally valid CID. ``version`` 0 is the legacy base58 ``Qm...`` form (dag-pb, sha2-256)."""

    version: int
    codec: int
    hash_code: int
    digest: bytes

    @property
    def multihash(self) -> bytes:
        return _varint(self.hash_code) + _varint(len(self.digest)) + self.digest

    def encode(self, base: str = "b") -> str:
        """This CID as CIDv1 text in the multibase whose prefix is ``base`` (one of ``MULTIBASES``)."""
        return base + _encode(_varint(1) + _varint(self.codec) + self.multihash, _BASES[base])

    def v1_base32(self) -> str:
        """The canonical text form: CIDv1, base32 lower case, as Kubo prints it."""
        return self.encode("b")


@dataclass(frozen=True)
class IpfsPath:
    """IPFS content an image names: ``root`` is a CID (``ipfs``) or an IPNS name (``ipns``), as given."""

    namespace: str
    root: str
    subpath: str = ""

    @property
    def path(self) -> str:
        """The canonical IPFS path, the one form Kubo's RPC API takes."""
        return f"/{self.namespace}/{self.root}{self.subpath}"

    @property
    def is_mutable(self) -> bool:
        """IPNS names may point elsewhere tomorrow; they are resolved once and the CID kept."""
        return self.namespace == "ipns"


def looks_like_ipfs_path(text: str) -> bool:
    """Whether ``text`` is meant as IPFS content rather than a local file or a URL.

    Case-insensitive, so that ``IPFS://...`` is refused as a bad IPFS path instead of being taken
    for a file name.
    """
    return text[:9].lower().startswith(_PREFIXES)


def parse_ipfs_path(text: str) -> IpfsPath:
    """Parse an IPFS path in any accepted form into its canonical parts."""
    try:
        return _parse_ipfs_path(text)
    except ValueError as exc:
        raise InvalidIpfsPath(
            f"{_shown(text)} is not a valid IPFS path ({exc}); accepted forms: {ACCEPTED_FORMS}"
        ) from None


def parse_cid(text: str) -> Cid:
    """Decode and check a CID in any accepted multibase, or a 46-character CIDv0."""
    try:
        if len(text) > MAX_PATH:
            raise ValueError(f"it is longer than {MAX_PATH} characters")
        return _decode_cid(text)
    except ValueError as exc:
        raise InvalidIpfsPath(f"{_shown(text)} is not a valid CID: {exc}") from None


def _shown(text: str) -> str:
    """A hostile value made safe for a one-line message: shortened, ASCII-only, quoted."""
    return ascii(text[:80]) + ("..." if len(text) > 80 else "")


def _parse_ipfs_path(text: str) -> IpfsPath:
    if len(text) > MAX_PATH:
        raise ValueError(f"it is longer than {MAX_PATH} characters")
    for prefix, namespace in _FORMS:
        if text.startswith(prefix):
            return _parse_parts(namespace, text[len(prefix) :])
    if looks_like_ipfs_path(text):
        raise ValueError("the prefix must be written in lower case")
    raise ValueError("it does not start with /ipfs/, /ipns/, fs:/ipfs/, fs:/ipns/, ipfs:// or ipns://")


def _parse_parts(namespace: str, rest: str) -> IpfsPath:
    root, slash, tail = rest.partition("/")
    if namespace == "ipfs":
        _content_root(root)
    else:
        root = _ipns_name(root)
    return IpfsPath(namespace, root, _subpath(slash + tail))


def _content_root(root: str) -> None:
    if not root:
        raise ValueError("no CID follows the /ipfs/ prefix")
    cid = _decode_cid(root)
    if cid.codec == LIBP2P_KEY:
        raise ValueError(f"{root[:80]} is an IPNS key, not content: use /ipns/{root[:80]}")


def _ipns_name(name: str) -> str:
    """Check an IPNS name; DNSLink domains come back in lower case, keys as given."""
    if not name:
        raise ValueError("no name follows the /ipns/ prefix")
    if "." in name:
        return _dns_name(name)
    try:
        if name.startswith(("1", "Qm")):
            code, digest = _multihash(_decode_text(name, _BASES["z"]), 0)
            if code not in (IDENTITY, SHA2_256) or (code == IDENTITY and len(digest) > MAX_INLINED_KEY):
                raise ValueError("a peer ID is an inlined public key or its sha2-256")
            return name
        cid = _decode_cid(name)
    except ValueError as exc:
        raise ValueError(f"the IPNS name is neither a DNSLink domain nor a valid key: {exc}") from None
    if cid.codec != LIBP2P_KEY:
        raise ValueError(f"{name[:80]} is content, not an IPNS key: use /ipfs/{name[:80]}")
    return name


def _dns_name(name: str) -> str:
    if not name.isascii():
        raise ValueError("a DNSLink domain must be ASCII (write it in its xn-- form)")
    if len(name) > 253:
        raise ValueError("a DNSLink domain has at most 253 characters")
    labels = name.lower().split(".")
    for label in labels:
        if not _DNS_LABEL.fullmatch(label):
            raise ValueError(f"{label[:80]!a} is not a valid DNS label")
    if labels[-1].isdigit():
        raise ValueError("an IP address is not a DNSLink domain")
    return ".".join(labels)


def _subpath(text: str) -> str:
    """``""`` or ``/a/b``: one trailing slash is dropped, every segment checked."""
    if text.endswith("/"):
        text = text[:-1]
    if not text:
        return ""
    for segment in text[1:].split("/"):
        _check_segment(segment)
    return text


def _check_segment(segment: str) -> None:
    if not segment:
        raise ValueError("the path has an empty segment")
    for form in (segment, unicodedata.normalize("NFKC", segment)):
        if form in (".", ".."):
            raise ValueError(f"the path may not contain {form!a} segments")
        for char in form:
            if char in _FORBIDDEN or unicodedata.category(char)[0] in "CZ":
                raise ValueError(f"the path may not contain {char!a}")
    if len(segment.encode("utf-8")) > MAX_SEGMENT_BYTES:
        raise ValueError(f"a path segment has more than {MAX_SEGMENT_BYTES} bytes")


def _decode_cid(text: str) -> Cid:
    if text.startswith("Qm"):
        if len(text) != 46:
            raise ValueError(f"a CIDv0 (Qm...) has 46 characters, not {len(text)}")
        code, digest = _multihash(_decode_text(text, _BASES["z"]), 0)
        if code != SHA2_256:
            raise ValueError("a CIDv0 is a sha2-256 multihash")
        return Cid(0, DAG_PB, code, digest)
    if not text:
        raise ValueError("it is empty")
    base = _BASES.get(text[0])
    if base is None:
        raise ValueError(f"{text[0]!a} is not a supported multibase prefix ({''.join(MULTIBASES)})")
    data = _decode_text(text[1:], base)
    if data[:1] == b"\x12":
        raise ValueError("a CIDv0 cannot carry a multibase prefix")
    version, offset = _read_varint(data, 0, "CID version")
    if version != 1:
        raise ValueError(f"CID version {version} does not exist")
    codec, offset = _read_varint(data, offset, "codec")
    if codec not in CODECS:
        raise ValueError(f"codec 0x{codec:x} is not supported")
    code, digest = _multihash(data, offset)
    return Cid(1, codec, code, digest)


def _multihash(data: bytes, offset: int) -> tuple[int, bytes]:
    code, offset = _read_varint(data, offset, "multihash function")
    length, offset = _read_varint(data, offset, "multihash length")
    digest = data[offset:]
    if len(digest) != length:
        raise ValueError(f"the multihash announces {length} digest bytes but holds {len(digest)}")
    known = HASHES.get(code)
    if known is None:
        raise ValueError(f"multihash function 0x{code:x} is not supported")
    name, sizes = known
    if length not in sizes:
        raise ValueError(f"a {name} digest cannot have {length} bytes")
    return code, digest


def _read_varint(data: bytes, offset: int, what: str) -> tuple[int, int]:
    """An unsigned varint as multiformats define it: at most 9 bytes, minimally encoded."""
    value = 0
    for index in range(9):
        if offset + index >= len(data):
            raise ValueError(f"the {what} is cut short")
        byte = data[offset + index]
        value |= (byte & 0x7F) << (7 * index)
        if not byte & 0x80:
            if byte == 0 and index > 0:
                raise ValueError(f"the {what} is not minimally encoded")
            return value, offset + index + 1
    raise ValueError(f"the {what} is longer than 9 bytes")


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _decode_text(text: str, base: _Multibase) -> bytes:
    if base.bits:
        return _decode_bits(text, base)
    return _decode_positional(text, base)


def _encode(data: bytes, base: _Multibase) -> str:
    if base.bits:
        return _encode_bits(data, base)
    return _encode_positional(data, base)


def _pad_group(base: _Multibase) -> int:
    """Characters per padded group: 8 for base32 (40 bits), 4 for base64 (24 bits)."""
    return 8 if base.bits == 5 else 4


def _decode_bits(text: str, base: _Multibase) -> bytes:
    """RFC 4648 bit unpacking; the unused bits of the last character must be zero (canonical form)."""
    if base.pad:
        stripped = text.rstrip("=")
        group = _pad_group(base)
        if len(text) % group or len(text) - len(stripped) != -len(stripped) % group:
            raise ValueError(f"the {base.name} padding is wrong")
        text = stripped
    out = bytearray()
    buffer = bits = 0
    for char in text:
        value = base.alphabet.find(char)
        if value < 0:
            raise ValueError(f"{char!a} is not a {base.name} character")
        buffer = (buffer << base.bits) | value
        bits += base.bits
        if bits >= 8:
            bits -= 8
            out.append(buffer >> bits)
            buffer &= (1 << bits) - 1
    if bits >= base.bits or buffer:
        raise ValueError(f"the {base.name} text does not end on a byte boundary")
    return bytes(out)


def _encode_bits(data: bytes, base: _Multibase) -> str:
    out = []
    buffer = bits = 0
    mask = (1 << base.bits) - 1
    for byte in data:
        buffer = (buffer << 8) | byte
        bits += 8
        while bits >= base.bits:
            bits -= base.bits
            out.append(base.alphabet[(buffer >> bits) & mask])
        buffer &= (1 << bits) - 1
    if bits:
        out.append(base.alphabet[(buffer << (base.bits - bits)) & mask])
    if base.pad:
        out.append("=" * (-len(out) % _pad_group(base)))
    return "".join(out)


def _decode_positional(text: str, base: _Multibase) -> bytes:
    """Base36/base58: a big number, with each leading zero digit standing for one zero byte."""
    zeros = len(text) - len(text.lstrip(base.alphabet[0]))
    number = 0
    for char in text[zeros:]:
        value = base.alphabet.find(char)
        if value < 0:
            raise ValueError(f"{char!a} is not a {base.name} character")
        number = number * len(base.alphabet) + value
    return bytes(zeros) + number.to_bytes((number.bit_length() + 7) // 8, "big")


def _encode_positional(data: bytes, base: _Multibase) -> str:
    zeros = len(data) - len(data.lstrip(b"\0"))
    number = int.from_bytes(data, "big")
    digits = []
    while number:
        number, digit = divmod(number, len(base.alphabet))
        digits.append(base.alphabet[digit])
    return base.alphabet[0] * zeros + "".join(reversed(digits))
