"""IPFS paths as users write them in ``oneimage create --path`` / ``--source``.

Known-answer vectors were printed by Kubo 0.43 (``ipfs cid format -b <base> <cid>``), so the
decoders here are checked against the node that later resolves the paths. Property tests use
the standard library's base32/base64/base16 codecs as an independent oracle.
"""

from __future__ import annotations

import base64
import hashlib

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from one_ipfs.errors import InvalidIpfsPath
from one_ipfs.ipfs.paths import (
    ACCEPTED_FORMS,
    CODECS,
    HASHES,
    LIBP2P_KEY,
    MAX_PATH,
    MULTIBASES,
    Cid,
    IpfsPath,
    looks_like_ipfs_path,
    parse_cid,
    parse_ipfs_path,
)

EMPTY_DIR_V0 = "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn"
EMPTY_DIR_V1 = "bafybeiczsscdsbs7ffqz55asqdf3smv6klcw3gofszvwlyarci47bgf354"
EMPTY_FILE = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
HELLO_IDENTITY = "bafkqac3imvwgy3zao5xxe3de"
# raw, blake2b-256 of b"one-ipfs": 38 bytes, so the padded bases really pad.
BLAKE = "bafk2bzaceaypp22w2g4f23nqbeyu4h4s6agwdfm3k3lov2mmdhc34q226ush4"
# One ed25519 key (public key bytes 0..31) as a CIDv1 libp2p-key and as a legacy peer ID.
KEY_K51 = "k51qzi5uqu5dg6lcd99r9gmb963kgugjinxxggwy7o93oagk3f2eg3qcjh7127"
KEY_PEER_ID = "12D3KooW9pP4Seg3kZYhySpuVjn1RPdQBsUFZKiFxGMGQN5MeL6A"

EMPTY_FILE_IN_EVERY_BASE = {
    "0": "00000000101010101000100100010000011100011101100001100010001000010100110001111110000011100000"
    "10100100110101111101111110100110010001001100101101111101110010010010000100111101011100100000"
    "11110010001100100100110111001001101001100101001001001010110011001000110110111100001010010101"
    "1100001010101",
    "b": EMPTY_FILE,
    "B": EMPTY_FILE.upper(),
    "c": "cafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku======",
    "C": "CAFKREIHDWDCEFGH4DQKJV67UZCMW7OJEE6XEDZDETOJUZJEVTENXQUVYKU======",
    "f": "f01551220e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "F": "F01551220E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855",
    "k": "k2cwueebp9wws0fnm29jatrrbqocjaivp132efhd99cd5phw2odywbit",
    "K": "K2CWUEEBP9WWS0FNM29JATRRBQOCJAIVP132EFHD99CD5PHW2ODYWBIT",
    "m": "mAVUSIOOwxEKY/BwUmvv0yJlvuSQnrkHkZJuTTKSVmRt4UrhV",
    "M": "MAVUSIOOwxEKY/BwUmvv0yJlvuSQnrkHkZJuTTKSVmRt4UrhV",
    "t": "t05ah4873m324567s3ga9luvkp2cmve944un43p34je9kp94lj4dngkloak======",
    "T": "T05AH4873M324567S3GA9LUVKP2CMVE944UN43P34JE9KP94LJ4DNGKLOAK======",
    "u": "uAVUSIOOwxEKY_BwUmvv0yJlvuSQnrkHkZJuTTKSVmRt4UrhV",
    "U": "UAVUSIOOwxEKY_BwUmvv0yJlvuSQnrkHkZJuTTKSVmRt4UrhV",
    "v": "v05ah4873m324567s3ga9luvkp2cmve944un43p34je9kp94lj4dngkloak",
    "V": "V05AH4873M324567S3GA9LUVKP2CMVE944UN43P34JE9KP94LJ4DNGKLOAK",
    "z": "zb2rhmy65F3REf8SZp7De11gxtECBGgUKaLdiDj7MCGCHxbDW",
    "Z": "ZA2RGLY65f3qeE8ryP7dD11FXTecbgFtjzkCHdJ7mcgchXAdv",
}

BLAKE_PADDED = {
    "c": "cafk2bzaceaypp22w2g4f23nqbeyu4h4s6agwdfm3k3lov2mmdhc34q226ush4===",
    "C": "CAFK2BZACEAYPP22W2G4F23NQBEYU4H4S6AGWDFM3K3LOV2MMDHC34Q226USH4===",
    "t": "t05aq1p0240offqqmq6s5qrdg14oks7siu06m35crarbelqcc372rsgqquki7s===",
    "m": "mAVWg5AIgMPfrVtG4XW2wCTFOH5LwDWGVm1bW6umMGcW+Q1r1JH4",
    "M": "MAVWg5AIgMPfrVtG4XW2wCTFOH5LwDWGVm1bW6umMGcW+Q1r1JH4=",
    "u": "uAVWg5AIgMPfrVtG4XW2wCTFOH5LwDWGVm1bW6umMGcW-Q1r1JH4",
    "U": "UAVWg5AIgMPfrVtG4XW2wCTFOH5LwDWGVm1bW6umMGcW-Q1r1JH4=",
    "z": "zCT5htke198B4SPk6G6ju6QrozEP8MvzqoqFpg8dtYP6CMXH5Vxy",
    "k": "k3bguy6nzgxpzgvbl5dd32toasue2gxmuyssg0ahpgk9v0qqga8nfv1b6v2",
}


def varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def b32(data: bytes) -> str:
    """An independent base32 CID text: the standard library's codec, multibase style."""
    return "b" + base64.b32encode(data).decode().lower().rstrip("=")


def cid_bytes(codec: int, hash_code: int, digest: bytes, version: bytes = b"\x01") -> bytes:
    return version + varint(codec) + varint(hash_code) + varint(len(digest)) + digest


SHA256_OF_NOTHING = hashlib.sha256(b"").digest()


# ----------------------------------------------------------------------------------------- CIDs


def test_empty_directory_cidv0_and_its_published_cidv1_name_the_same_content() -> None:
    v0, v1 = parse_cid(EMPTY_DIR_V0), parse_cid(EMPTY_DIR_V1)
    assert (v0.version, v1.version) == (0, 1)
    assert v0.codec == v1.codec == 0x70
    assert v0.hash_code == v1.hash_code == 0x12
    assert v0.digest == v1.digest
    assert v0.v1_base32() == EMPTY_DIR_V1


def test_raw_cid_of_the_empty_file_carries_the_sha256_of_nothing() -> None:
    cid = parse_cid(EMPTY_FILE)
    assert cid == Cid(1, 0x55, 0x12, SHA256_OF_NOTHING)


def test_identity_cid_inlines_its_content() -> None:
    assert parse_cid(HELLO_IDENTITY) == Cid(1, 0x55, 0x00, b"hello world")
    assert parse_cid("bafkqaaa") == Cid(1, 0x55, 0x00, b"")


@pytest.mark.parametrize("base", sorted(EMPTY_FILE_IN_EVERY_BASE))
def test_every_multibase_kubo_prints_decodes_to_the_same_cid(base: str) -> None:
    text = EMPTY_FILE_IN_EVERY_BASE[base]
    cid = parse_cid(text)
    assert cid.digest == SHA256_OF_NOTHING
    assert cid.encode(base) == text
    assert cid.v1_base32() == EMPTY_FILE


def test_every_accepted_multibase_has_a_kubo_vector() -> None:
    assert set(MULTIBASES) == set(EMPTY_FILE_IN_EVERY_BASE)


@pytest.mark.parametrize("base", sorted(BLAKE_PADDED))
def test_padded_and_positional_bases_match_kubo_when_padding_is_needed(base: str) -> None:
    cid = parse_cid(BLAKE_PADDED[base])
    assert cid == Cid(1, 0x55, 0xB220, hashlib.blake2b(b"one-ipfs", digest_size=32).digest())
    assert cid.encode(base) == BLAKE_PADDED[base]
    assert cid.v1_base32() == BLAKE


def test_ipns_key_as_cid_and_as_legacy_peer_id_are_the_same_key() -> None:
    key = parse_cid(KEY_K51)
    assert key.codec == LIBP2P_KEY
    assert key.hash_code == 0x00
    assert key.digest == b"\x08\x01\x12\x20" + bytes(range(32))
    assert parse_ipfs_path(f"/ipns/{KEY_K51}").root == KEY_K51
    assert parse_ipfs_path(f"/ipns/{KEY_PEER_ID}").root == KEY_PEER_ID
    assert parse_ipfs_path(f"ipns://{EMPTY_DIR_V0}").root == EMPTY_DIR_V0


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("Qm", "46 characters"),
        (EMPTY_DIR_V0[:-1] + "0", "not a base58btc character"),
        ("x" + EMPTY_FILE[1:], "not a supported multibase prefix"),
        ("h" + EMPTY_FILE[1:], "not a supported multibase prefix"),
        ("\U0001f680abc", "not a supported multibase prefix"),
        ("z" + EMPTY_DIR_V0, "cannot carry a multibase prefix"),
        (b32(cid_bytes(0x55, 0x12, SHA256_OF_NOTHING, version=b"\x02")), "version 2"),
        (b32(cid_bytes(0x55, 0x12, SHA256_OF_NOTHING, version=b"\x81\x00")), "not minimally encoded"),
        (b32(cid_bytes(0x9999, 0x12, SHA256_OF_NOTHING)), "codec 0x9999"),
        (b32(cid_bytes(0x55, 0x11, bytes(20))), "0x11 is not supported"),
        (b32(cid_bytes(0x55, 0x12, bytes(31))), "cannot have 31 bytes"),
        (b32(cid_bytes(0x55, 0x00, bytes(129))), "cannot have 129 bytes"),
        (b32(cid_bytes(0x55, 0x12, SHA256_OF_NOTHING) + b"\0"), "holds 33"),
        (b32(cid_bytes(0x55, 0x12, SHA256_OF_NOTHING)[:-1]), "holds 31"),
        (b32(b"\x01\x55\x12"), "cut short"),
        (b32(b"\x01" + b"\xff" * 10), "longer than 9 bytes"),
        (EMPTY_FILE[:-1] + "l", "byte boundary"),
        (EMPTY_FILE + "a", "byte boundary"),
        (EMPTY_FILE.upper()[:-2] + "ku", "not a base32upper character"),
        ("b" + EMPTY_FILE[1:].upper(), "not a base32 character"),
        (BLAKE_PADDED["c"][:-1], "padding"),
        (BLAKE_PADDED["M"] + "=", "padding"),
        (BLAKE_PADDED["m"] + "=", "not a base64 character"),
        ("f" + "0" * (2 * MAX_PATH), "longer than"),
    ],
)
def test_malformed_cids_are_refused_with_the_reason(text: str, reason: str) -> None:
    with pytest.raises(InvalidIpfsPath, match="is not a valid CID") as caught:
        parse_cid(text)
    assert reason in str(caught.value)


@given(
    codec=st.sampled_from(sorted(CODECS)),
    hashed=st.sampled_from(sorted(HASHES)).flatmap(
        lambda code: st.tuples(
            st.just(code),
            st.sampled_from(list(HASHES[code][1])).flatmap(lambda n: st.binary(min_size=n, max_size=n)),
        )
    ),
    base=st.sampled_from(MULTIBASES),
)
def test_any_valid_cid_round_trips_through_every_multibase(
    codec: int, hashed: tuple[int, bytes], base: str
) -> None:
    cid = Cid(1, codec, hashed[0], hashed[1])
    text = cid.encode(base)
    assert parse_cid(text) == cid
    assert parse_cid(cid.v1_base32()) == cid
    assert text[0] == base


@given(digest=st.binary(min_size=32, max_size=32), codec=st.sampled_from(sorted(CODECS)))
def test_cids_written_by_an_independent_encoder_parse_to_their_fields(digest: bytes, codec: int) -> None:
    data = cid_bytes(codec, 0x12, digest)
    expected = Cid(1, codec, 0x12, digest)
    assert parse_cid(b32(data)) == expected
    assert parse_cid("f" + data.hex()) == expected
    assert parse_cid("M" + base64.b64encode(data).decode()) == expected
    assert parse_cid("u" + base64.urlsafe_b64encode(data).decode().rstrip("=")) == expected
    assert parse_cid("C" + base64.b32encode(data).decode()) == expected
    assert parse_cid(b32(data)).v1_base32() == b32(data)


@given(st.text(max_size=300))
@example("Qm" + "1" * 44)
@example("k" + "0" * 50)
@example("b")
def test_no_text_breaks_parse_cid_with_anything_but_invalid_ipfs_path(text: str) -> None:
    try:
        cid = parse_cid(text)
    except InvalidIpfsPath as exc:
        assert "\n" not in str(exc)
    else:
        assert parse_cid(cid.v1_base32()) == cid


# ---------------------------------------------------------------------------------- IPFS paths


@pytest.mark.parametrize(
    "text",
    [
        f"/ipfs/{EMPTY_DIR_V1}/debian/disk.qcow2",
        f"fs:/ipfs/{EMPTY_DIR_V1}/debian/disk.qcow2",
        f"ipfs://{EMPTY_DIR_V1}/debian/disk.qcow2",
        f"ipfs://{EMPTY_DIR_V1}/debian/disk.qcow2/",
    ],
)
def test_every_ipfs_form_gives_the_same_canonical_path(text: str) -> None:
    ref = parse_ipfs_path(text)
    assert ref == IpfsPath("ipfs", EMPTY_DIR_V1, "/debian/disk.qcow2")
    assert ref.path == f"/ipfs/{EMPTY_DIR_V1}/debian/disk.qcow2"
    assert not ref.is_mutable
    assert looks_like_ipfs_path(text)


@pytest.mark.parametrize(
    "text",
    [f"/ipns/{KEY_K51}/img", f"fs:/ipns/{KEY_K51}/img", f"ipns://{KEY_K51}/img", f"ipns://{KEY_K51}/img/"],
)
def test_every_ipns_form_gives_the_same_canonical_path(text: str) -> None:
    ref = parse_ipfs_path(text)
    assert ref == IpfsPath("ipns", KEY_K51, "/img")
    assert ref.path == f"/ipns/{KEY_K51}/img"
    assert ref.is_mutable


def test_cid_is_kept_as_the_user_wrote_it() -> None:
    ref = parse_ipfs_path(f"/ipfs/{EMPTY_DIR_V0}/")
    assert ref.root == EMPTY_DIR_V0
    assert ref.subpath == ""
    assert ref.path == f"/ipfs/{EMPTY_DIR_V0}"
    upper = EMPTY_FILE_IN_EVERY_BASE["K"]
    assert parse_ipfs_path(f"ipfs://{upper}").path == f"/ipfs/{upper}"


def test_dnslink_domain_is_checked_and_lower_cased() -> None:
    ref = parse_ipfs_path("/ipns/Docs.IPFS.tech/install/")
    assert ref == IpfsPath("ipns", "docs.ipfs.tech", "/install")
    assert parse_ipfs_path("ipns://xn--bcher-kva.example").root == "xn--bcher-kva.example"


def test_unicode_letters_are_fine_in_file_names() -> None:
    assert (
        parse_ipfs_path(f"/ipfs/{EMPTY_DIR_V1}/imágenes/débian-12.raw").subpath == "/imágenes/débian-12.raw"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"/ipfs/{EMPTY_DIR_V1}", True),
        (f"IPFS://{EMPTY_DIR_V1}", True),
        ("FS:/IPNS/x", True),
        ("/var/tmp/debian.qcow2", False),
        ("https://example.org/ipfs/x", False),
        ("ipfs:/x", False),
        ("/ipfsx/y", False),
        ("", False),
    ],
)
def test_looks_like_reference_tells_ipfs_from_files_and_urls(text: str, expected: bool) -> None:
    assert looks_like_ipfs_path(text) is expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "does not start with"),
        ("/ipfs", "does not start with"),
        ("/var/lib/one/image.qcow2", "does not start with"),
        ("http://gateway/ipfs/x", "does not start with"),
        (f" /ipfs/{EMPTY_DIR_V1}", "does not start with"),
        (f"IPFS://{EMPTY_DIR_V1}", "lower case"),
        (f"fs:/IPFS/{EMPTY_DIR_V1}", "lower case"),
        ("/ipfs/", "no CID"),
        ("ipfs://", "no CID"),
        ("/ipfs//x", "no CID"),
        ("/ipns/", "no name"),
        ("/ipfs/bafy", "byte boundary"),
        (f"/ipfs/{EMPTY_DIR_V1} ", "' '"),
        (f"/ipfs/{EMPTY_DIR_V1}\n", "'\\n'"),
        (f"/ipfs/{KEY_K51}", "is an IPNS key, not content"),
        (f"/ipns/{EMPTY_DIR_V1}", "is content, not an IPNS key"),
        ("/ipns/localhost", "neither a DNSLink domain nor a valid key"),
        ("/ipns/-bad.example.org", "not a valid DNS label"),
        ("/ipns/bad-.example.org", "not a valid DNS label"),
        ("/ipns/a..example.org", "not a valid DNS label"),
        ("/ipns/example.org.", "not a valid DNS label"),
        ("/ipns/ex_ample.org", "not a valid DNS label"),
        ("/ipns/" + "a" * 64 + ".org", "not a valid DNS label"),
        ("/ipns/" + ("a" * 60 + ".") * 5 + "org", "253"),
        ("/ipns/10.0.0.1", "IP address"),
        ("/ipns/bücher.example", "ASCII"),
        ("/ipns/$(reboot).example.org", "not a valid DNS label"),
        ("/ipns/12D3KooWx", "neither a DNSLink domain nor a valid key"),
        (f"/ipfs/{EMPTY_DIR_V1}/a/../../etc/passwd", "'..' segments"),
        (f"/ipfs/{EMPTY_DIR_V1}/./a", "'.' segments"),
        (f"/ipfs/{EMPTY_DIR_V1}/a//b", "empty segment"),
        (f"/ipfs/{EMPTY_DIR_V1}//", "empty segment"),
        (f"/ipfs/{EMPTY_DIR_V1}/a\0b", "'\\x00'"),
        (f"/ipfs/{EMPTY_DIR_V1}/a\tb", "'\\t'"),
        (f"/ipfs/{EMPTY_DIR_V1}/a\u00a0b", "'\\xa0'"),
        (f"/ipfs/{EMPTY_DIR_V1}/a\u202eb", "'\\u202e'"),
        (f"/ipfs/{EMPTY_DIR_V1}/a\u200bb", "'\\u200b'"),
        (f"/ipfs/{EMPTY_DIR_V1}/\x1b[31mred", "'\\x1b'"),
        (f"/ipfs/{EMPTY_DIR_V1}/\uff0e\uff0e", "'..' segments"),
        (f"/ipfs/{EMPTY_DIR_V1}/a\uff0fb", "'/'"),
        (f"/ipfs/{EMPTY_DIR_V1}/$(reboot)", "'$'"),
        (f"/ipfs/{EMPTY_DIR_V1}/`id`", "'`'"),
        (f"/ipfs/{EMPTY_DIR_V1}/a;rm", "';'"),
        (f"/ipfs/{EMPTY_DIR_V1}/a|b", "'|'"),
        (f"/ipfs/{EMPTY_DIR_V1}/a&b", "'&'"),
        (f"/ipfs/{EMPTY_DIR_V1}/a>b", "'>'"),
        (f"/ipfs/{EMPTY_DIR_V1}/it's", '"\'"'),
        (f'/ipfs/{EMPTY_DIR_V1}/say"hi"', "'\"'"),
        (f"/ipfs/{EMPTY_DIR_V1}/a\\b", "'\\\\'"),
        (f"/ipfs/{EMPTY_DIR_V1}/*.img", "'*'"),
        (f"ipfs://{EMPTY_DIR_V1}/disk.img?download=1", "'?'"),
        (f"ipfs://{EMPTY_DIR_V1}/disk.img#part", "'#'"),
        (f"/ipfs/{EMPTY_DIR_V1}/host:path", "':'"),
        (f"/ipfs/{EMPTY_DIR_V1}/" + "a" * 256, "more than 255 bytes"),
        (f"/ipfs/{EMPTY_DIR_V1}/" + "é" * 128, "more than 255 bytes"),
        (f"/ipfs/{EMPTY_DIR_V1}/" + "a/" * MAX_PATH, "longer than 4096"),
    ],
)
def test_bad_references_are_refused_with_the_reason(text: str, reason: str) -> None:
    with pytest.raises(InvalidIpfsPath) as caught:
        parse_ipfs_path(text)
    assert reason in str(caught.value)


def test_refusal_is_one_safe_line_naming_the_accepted_forms() -> None:
    hostile = "/ipfs/x\n\x1b[2J\u202eERROR: fake\r\n" + "A" * 10_000
    with pytest.raises(InvalidIpfsPath) as caught:
        parse_ipfs_path(hostile)
    message = str(caught.value)
    assert message.isascii()
    assert message.isprintable()
    assert ACCEPTED_FORMS in message
    assert message.startswith("'/ipfs/x\\n\\x1b[2J\\u202eERROR: fake\\r\\nAAA")
    assert len(message) < 600


@given(st.text(max_size=200))
@example(f"/ipfs/{EMPTY_DIR_V1}/\ud800")
@example(f"/ipns/{KEY_PEER_ID}/a")
@example("fs:/ipns/a.b")
def test_no_text_breaks_parse_ipfs_path_with_anything_but_invalid_ipfs_path(text: str) -> None:
    looks_like_ipfs_path(text)
    try:
        ref = parse_ipfs_path(text)
    except InvalidIpfsPath as exc:
        assert str(exc).isascii()
        assert "\n" not in str(exc)
    else:
        assert parse_ipfs_path(ref.path) == ref


@st.composite
def ipfs_paths(draw: st.DrawFn) -> tuple[str, IpfsPath]:
    """A valid IPFS path in a random accepted form, and the IpfsPath it must parse to."""
    namespace = draw(st.sampled_from(["ipfs", "ipns"]))
    digest = draw(st.binary(min_size=32, max_size=32))
    if namespace == "ipfs":
        root = Cid(1, draw(st.sampled_from([0x55, 0x70])), 0x12, digest).encode(
            draw(st.sampled_from([b for b in MULTIBASES if b not in "mM"]))
        )
    else:
        root = draw(
            st.sampled_from(
                [
                    Cid(1, LIBP2P_KEY, 0x00, b"\x08\x01\x12\x20" + digest).encode("k"),
                    "docs.ipfs.tech",
                    KEY_PEER_ID,
                ]
            )
        )
    segment = st.text(
        alphabet=st.characters(
            codec="utf-8", categories=["Ll", "Lu", "Nd", "Pd", "Pc"], include_characters="._=+,@%~"
        ),
        min_size=1,
        max_size=20,
    ).filter(lambda s: s not in (".", "..") and len(s.encode()) <= 255)
    segments = draw(st.lists(segment, max_size=4))
    subpath = "".join("/" + s for s in segments)
    prefix = draw(st.sampled_from(["/{ns}/", "fs:/{ns}/", "{ns}://"])).format(ns=namespace)
    slash = draw(st.sampled_from(["", "/"]))
    return prefix + root + subpath + slash, IpfsPath(namespace, root, subpath)


@given(ipfs_paths())
def test_any_valid_reference_parses_to_its_parts_and_its_canonical_path_round_trips(
    case: tuple[str, IpfsPath],
) -> None:
    text, expected = case
    ref = parse_ipfs_path(text)
    assert ref.namespace == expected.namespace
    assert ref.root == expected.root
    assert ref.subpath == expected.subpath
    assert parse_ipfs_path(ref.path) == ref
    assert looks_like_ipfs_path(text)
