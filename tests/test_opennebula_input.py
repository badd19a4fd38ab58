"""What OpenNebula hands the drivers (DS driver actions, CLI XML, TM ``host:path`` arguments) and how
the drivers answer (stdout result, ``INFO:``/``ERROR:`` log lines, one plain failure line).

The XML samples follow ``Image::to_xml``, ``Datastore::to_xml`` and ``onevm show -x`` of OpenNebula 7.
"""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Callable
from typing import BinaryIO

import pytest

from one_ipfs.errors import ContentNotFound, InvalidInput, OneIpfsError
from one_ipfs.opennebula.documents import (
    MAX_PAYLOAD,
    DsAction,
    parse_datastore_xml,
    parse_ds_action,
    parse_image_xml,
    parse_vm_xml,
    read_ds_action,
)
from one_ipfs.opennebula.location import DiskPath, Location, disk_id_of, parse_disk_path
from one_ipfs.opennebula.output import INTERNAL_ERROR_EXIT, log_error, log_info, relay_log, run_action

CID = "bafybeiczsscdsbs7ffqz55asqdf3smv6klcw3gofszvwlyarci47bgf354"


def image_xml(**fields: str) -> str:
    values = {
        "ID": "7",
        "TYPE": "0",
        "PERSISTENT": "0",
        "SOURCE": "",
        "PATH": f"/ipfs/{CID}/debian.qcow2",
        "FORMAT": "",
        "FS": "",
        "SIZE": "2252",
        "CLONING_ID": "-1",
        "TARGET_SNAPSHOT": "-1",
    }
    values.update(fields)
    body = "".join(
        f"<{name}><![CDATA[{value}]]></{name}>"
        if name in ("SOURCE", "PATH", "FORMAT", "FS")
        else f"<{name}>{value}</{name}>"
        for name, value in values.items()
    )
    return (
        "<IMAGE><UID>0</UID><GID>0</GID><UNAME>oneadmin</UNAME><GNAME>oneadmin</GNAME><NAME>debian</NAME>"
        "<PERMISSIONS><OWNER_U>1</OWNER_U><OWNER_M>1</OWNER_M><OWNER_A>0</OWNER_A><GROUP_U>0</GROUP_U>"
        "<GROUP_M>0</GROUP_M><GROUP_A>0</GROUP_A><OTHER_U>0</OTHER_U><OTHER_M>0</OTHER_M><OTHER_A>0</OTHER_A>"
        "</PERMISSIONS><DISK_TYPE>0</DISK_TYPE><REGTIME>1732760000</REGTIME><MODTIME>0</MODTIME>"
        f"{body}<STATE>4</STATE><PREV_STATE>0</PREV_STATE><RUNNING_VMS>0</RUNNING_VMS>"
        "<CLONING_OPS>0</CLONING_OPS><DATASTORE_ID>100</DATASTORE_ID><DATASTORE>ipfs</DATASTORE>"
        "<VMS/><CLONES/><APP_CLONES/>"
        "<TEMPLATE><DEV_PREFIX><![CDATA[vd]]></DEV_PREFIX><MD5><![CDATA[d41d8cd98f00b204e9800998ecf8427e]]></MD5>"
        "<driver><![CDATA[qcow2]]></driver></TEMPLATE>"
        "<SNAPSHOTS><ALLOW_ORPHANS><![CDATA[NO]]></ALLOW_ORPHANS><CURRENT_BASE><![CDATA[-1]]></CURRENT_BASE>"
        "<NEXT_SNAPSHOT><![CDATA[0]]></NEXT_SNAPSHOT></SNAPSHOTS><BACKUP_INCREMENTS/><BACKUP_DISK_IDS/></IMAGE>"
    )


def datastore_xml(ds_id: str = "100", ds_type: str = "0") -> str:
    return (
        f"<DATASTORE><ID>{ds_id}</ID><UID>0</UID><GID>0</GID><UNAME>oneadmin</UNAME><GNAME>oneadmin</GNAME>"
        "<NAME>ipfs</NAME><PERMISSIONS><OWNER_U>1</OWNER_U><OWNER_M>1</OWNER_M><OWNER_A>0</OWNER_A>"
        "<GROUP_U>1</GROUP_U><GROUP_M>0</GROUP_M><GROUP_A>0</GROUP_A><OTHER_U>0</OTHER_U><OTHER_M>0</OTHER_M>"
        "<OTHER_A>0</OTHER_A></PERMISSIONS><DS_MAD><![CDATA[ipfs]]></DS_MAD><TM_MAD><![CDATA[ipfs]]></TM_MAD>"
        f"<BASE_PATH><![CDATA[/var/lib/one//datastores/{ds_id}]]></BASE_PATH><TYPE>{ds_type}</TYPE>"
        "<DISK_TYPE>0</DISK_TYPE><STATE>0</STATE><CLUSTERS><ID>0</ID></CLUSTERS><TOTAL_MB>20480</TOTAL_MB>"
        "<FREE_MB>20480</FREE_MB><USED_MB>0</USED_MB><IMAGES><ID>7</ID></IMAGES>"
        "<TEMPLATE><ALLOW_ORPHANS><![CDATA[YES]]></ALLOW_ORPHANS><CLONE_TARGET><![CDATA[SYSTEM]]></CLONE_TARGET>"
        "<DS_MAD><![CDATA[ipfs]]></DS_MAD><IPFS_API><![CDATA[http://127.0.0.1:5001]]></IPFS_API>"
        "<IPFS_API><![CDATA[http://second.example:5001]]></IPFS_API>"
        "<LN_TARGET><![CDATA[SYSTEM]]></LN_TARGET><SAFE_DIRS><![CDATA[/var/tmp /srv/images]]></SAFE_DIRS>"
        "<TM_MAD_SYSTEM><![CDATA[ssh,shared]]></TM_MAD_SYSTEM><EMPTY/>"
        "<VECTOR><A><![CDATA[1]]></A></VECTOR></TEMPLATE></DATASTORE>"
    )


def action_xml(image: str | None = None, datastore: str | None = None) -> str:
    image = image_xml() if image is None else image
    return f"<DS_DRIVER_ACTION_DATA>{image}{datastore or datastore_xml()}</DS_DRIVER_ACTION_DATA>"


def b64(text: str | bytes) -> bytes:
    return base64.b64encode(text.encode() if isinstance(text, str) else text)


class UnreadableStdin(io.BytesIO):
    """stdin of the pre-6.8 convention: nothing is sent there, so reading it is a bug (it could block)."""

    def read(self, size: int | None = -1) -> bytes:
        raise AssertionError("stdin must not be read when the action comes as an argument")


VM_XML = """<VM>
  <ID>42</ID>
  <UID>0</UID>
  <NAME>web</NAME>
  <LAST_POLL>0</LAST_POLL>
  <STATE>3</STATE>
  <LCM_STATE>1</LCM_STATE>
  <PREV_STATE>1</PREV_STATE>
  <PREV_LCM_STATE>0</PREV_LCM_STATE>
  <TEMPLATE>
    <CONTEXT>
      <DISK_ID><![CDATA[3]]></DISK_ID>
    </CONTEXT>
    <DISK>
      <ALLOW_ORPHANS><![CDATA[YES]]></ALLOW_ORPHANS>
      <CLONE><![CDATA[YES]]></CLONE>
      <CLONE_TARGET><![CDATA[SYSTEM]]></CLONE_TARGET>
      <DATASTORE><![CDATA[ipfs]]></DATASTORE>
      <DATASTORE_ID><![CDATA[100]]></DATASTORE_ID>
      <DEV_PREFIX><![CDATA[vd]]></DEV_PREFIX>
      <DISK_ID><![CDATA[0]]></DISK_ID>
      <DISK_SNAPSHOT_TOTAL_SIZE><![CDATA[0]]></DISK_SNAPSHOT_TOTAL_SIZE>
      <DISK_TYPE><![CDATA[FILE]]></DISK_TYPE>
      <DRIVER><![CDATA[qcow2]]></DRIVER>
      <FORMAT><![CDATA[qcow2]]></FORMAT>
      <IMAGE><![CDATA[debian]]></IMAGE>
      <IMAGE_ID><![CDATA[7]]></IMAGE_ID>
      <IMAGE_STATE><![CDATA[2]]></IMAGE_STATE>
      <LN_TARGET><![CDATA[SYSTEM]]></LN_TARGET>
      <ORIGINAL_SIZE><![CDATA[2252]]></ORIGINAL_SIZE>
      <READONLY><![CDATA[NO]]></READONLY>
      <SAVE><![CDATA[NO]]></SAVE>
      <SIZE><![CDATA[10240]]></SIZE>
      <SOURCE><![CDATA[one-ipfs/ds100/img7]]></SOURCE>
      <TARGET><![CDATA[vda]]></TARGET>
      <TM_MAD><![CDATA[ipfs]]></TM_MAD>
      <TM_MAD_SYSTEM><![CDATA[ssh]]></TM_MAD_SYSTEM>
      <TYPE><![CDATA[FILE]]></TYPE>
    </DISK>
    <DISK>
      <CLONE><![CDATA[NO]]></CLONE>
      <DATASTORE_ID><![CDATA[100]]></DATASTORE_ID>
      <DISK_ID><![CDATA[1]]></DISK_ID>
      <FORMAT><![CDATA[raw]]></FORMAT>
      <IMAGE_ID><![CDATA[8]]></IMAGE_ID>
      <PERSISTENT><![CDATA[YES]]></PERSISTENT>
      <SAVE><![CDATA[YES]]></SAVE>
      <SIZE><![CDATA[1024]]></SIZE>
      <ORIGINAL_SIZE><![CDATA[1024]]></ORIGINAL_SIZE>
      <SOURCE><![CDATA[one-ipfs/ds100/img8]]></SOURCE>
      <TM_MAD><![CDATA[ipfs]]></TM_MAD>
      <TYPE><![CDATA[FILE]]></TYPE>
    </DISK>
    <DISK>
      <DISK_ID><![CDATA[2]]></DISK_ID>
      <FORMAT><![CDATA[raw]]></FORMAT>
      <SIZE><![CDATA[512]]></SIZE>
      <TYPE><![CDATA[swap]]></TYPE>
    </DISK>
  </TEMPLATE>
  <USER_TEMPLATE/>
  <HISTORY_RECORDS>
    <HISTORY>
      <OID>42</OID>
      <SEQ>0</SEQ>
      <HOSTNAME>h1</HOSTNAME>
      <HID>0</HID>
      <CID>0</CID>
      <DS_ID>0</DS_ID>
      <TM_MAD><![CDATA[ssh]]></TM_MAD>
    </HISTORY>
    <HISTORY>
      <OID>42</OID>
      <SEQ>1</SEQ>
      <HOSTNAME>h2</HOSTNAME>
      <HID>1</HID>
      <CID>0</CID>
      <DS_ID>101</DS_ID>
      <TM_MAD><![CDATA[ssh]]></TM_MAD>
    </HISTORY>
  </HISTORY_RECORDS>
</VM>
"""


# --------------------------------------------------------------------------- DS driver actions


def test_cp_from_opennebula_6_8_reads_the_action_from_stdin() -> None:
    action, image_id = read_ds_action(["7"], io.BytesIO(b64(action_xml())))
    assert image_id == "7"
    assert action.raw.tag == "DS_DRIVER_ACTION_DATA"
    image = action.image
    assert image is not None
    assert image.id == 7
    assert image.path == f"/ipfs/{CID}/debian.qcow2"
    assert image.source == ""
    assert image.size_mb == 2252
    assert image.type == "OS"
    assert image.persistent is False
    assert image.cloning_id is None
    assert image.target_snapshot is None
    assert image.template == {
        "DEV_PREFIX": "vd",
        "MD5": "d41d8cd98f00b204e9800998ecf8427e",
        "DRIVER": "qcow2",
    }
    datastore = action.datastore
    assert (datastore.id, datastore.name, datastore.ds_mad, datastore.tm_mad) == (100, "ipfs", "ipfs", "ipfs")
    assert datastore.type == 0
    assert datastore.base_path == "/var/lib/one//datastores/100"


def test_datastore_attributes_are_the_simple_template_values_first_one_wins() -> None:
    action, _ = read_ds_action(["7"], io.BytesIO(b64(action_xml())))
    assert action.datastore.attributes == {
        "ALLOW_ORPHANS": "YES",
        "CLONE_TARGET": "SYSTEM",
        "DS_MAD": "ipfs",
        "IPFS_API": "http://127.0.0.1:5001",
        "LN_TARGET": "SYSTEM",
        "SAFE_DIRS": "/var/tmp /srv/images",
        "TM_MAD_SYSTEM": "ssh,shared",
        "EMPTY": "",
    }


def test_pre_6_8_convention_takes_the_action_from_the_first_argument_and_leaves_stdin_alone() -> None:
    action, image_id = read_ds_action([b64(action_xml()).decode(), "7"], UnreadableStdin())
    assert image_id == "7"
    assert action.image is not None
    assert action.image.id == 7


def test_both_conventions_give_the_same_action() -> None:
    current, _ = read_ds_action(["7"], io.BytesIO(b64(action_xml())))
    legacy, _ = read_ds_action([b64(action_xml()).decode(), "7"], UnreadableStdin())
    assert (current.image, current.datastore) == (legacy.image, legacy.datastore)


def test_base64_wrapped_or_ending_in_a_newline_is_accepted() -> None:
    encoded = base64.encodebytes(action_xml().encode()) + b"\n"
    assert b"\n" in encoded[:-2]
    action, _ = read_ds_action(["7"], io.BytesIO(encoded))
    assert action.datastore.id == 100


def test_monitor_action_carries_no_image() -> None:
    xml = "<DS_DRIVER_ACTION_DATA>" + datastore_xml(ds_type="1") + "</DS_DRIVER_ACTION_DATA>"
    action, ds_id = read_ds_action(["100"], io.BytesIO(b64(xml)))
    assert ds_id == "100"
    assert action.image is None
    assert action.datastore.type == 1


def test_stat_carries_a_minimal_image_with_only_a_path() -> None:
    minimal = f"<IMAGE><PATH>/ipfs/{CID}</PATH></IMAGE>"
    xml = f"<DS_DRIVER_ACTION_DATA>{minimal}{datastore_xml()}</DS_DRIVER_ACTION_DATA>"
    action, request_id = read_ds_action(["12"], io.BytesIO(b64(xml)))
    assert request_id == "12"
    image = action.image
    assert image is not None
    assert (image.id, image.size_mb, image.type, image.source, image.template) == (None, None, "", "", {})
    assert image.path == f"/ipfs/{CID}"


def test_clone_and_snapshot_ids_are_read_when_set() -> None:
    xml = action_xml(image_xml(CLONING_ID="3", TARGET_SNAPSHOT="0", PERSISTENT="1", TYPE="2"))
    action, _ = read_ds_action(["7"], io.BytesIO(b64(xml)))
    image = action.image
    assert image is not None
    assert (image.cloning_id, image.target_snapshot, image.persistent, image.type) == (
        3,
        0,
        True,
        "DATABLOCK",
    )


def test_plain_xml_action_parses_like_the_base64_one() -> None:
    action = parse_ds_action(action_xml())
    assert isinstance(action, DsAction)
    assert action.image is not None
    assert action.image.id == 7


def failure(argv: list[str], stdin: BinaryIO) -> str:
    with pytest.raises(InvalidInput) as caught:
        read_ds_action(argv, stdin)
    message = str(caught.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("argv", "stdin", "reason"),
    [
        (["7"], b"", "no driver action on stdin"),
        (["7"], b"  \n", "no driver action on stdin"),
        (["7"], b"this is not base64!", "not valid base64"),
        (["7"], b"PERTX0RSSVZFUl9BQ1RJT05fREFUQT4", "not valid base64"),
        (["7"], b"\xff\xfe\x00", "not valid base64"),
        (["not-base64", "7"], b"", "in the first argument is not valid base64"),
        ([], b"", "got 0 arguments"),
        (["a", "b", "7"], b"", "got 3 arguments"),
        (["7; rm -rf /"], b"", "non-negative whole number"),
        (["-1"], b"", "non-negative whole number"),
        (["99999999999"], b"", "non-negative whole number"),
        (["7\n"], b"", "non-negative whole number"),
    ],
)
def test_garbage_arguments_and_payloads_are_refused(argv: list[str], stdin: bytes, reason: str) -> None:
    assert reason in failure(argv, io.BytesIO(stdin))


def test_an_oversized_payload_is_refused_without_reading_it_all() -> None:
    stream = io.BytesIO(b"A" * (MAX_PAYLOAD + 100))
    assert "larger than 16 MiB" in failure(["7"], stream)
    assert stream.tell() == MAX_PAYLOAD + 1


BILLION_LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    '<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">'
    '<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]>'
    "<DS_DRIVER_ACTION_DATA><IMAGE><PATH>&lol3;</PATH></IMAGE></DS_DRIVER_ACTION_DATA>"
)
EXTERNAL_ENTITY = (
    '<!DOCTYPE d [<!ENTITY secret SYSTEM "file:///etc/passwd">]>'
    f"<DS_DRIVER_ACTION_DATA><IMAGE><PATH>&secret;</PATH></IMAGE>{datastore_xml()}</DS_DRIVER_ACTION_DATA>"
)


@pytest.mark.parametrize(
    ("xml", "reason"),
    [
        (BILLION_LAUGHS, "DTD or entities"),
        (EXTERNAL_ENTITY, "DTD or entities"),
        ('<!DOCTYPE DS_DRIVER_ACTION_DATA SYSTEM "http://198.18.0.1/x.dtd"><DS_DRIVER_ACTION_DATA/>', "DTD"),
        ("<DS_DRIVER_ACTION_DATA><IMAGE>", "not well-formed"),
        ("<DS_DRIVER_ACTION_DATA>&undefined;</DS_DRIVER_ACTION_DATA>", "not well-formed"),
        (b"<DS_DRIVER_ACTION_DATA>\xff</DS_DRIVER_ACTION_DATA>", "not well-formed"),
        (" ", "not well-formed"),
        ("<VM><ID>1</ID></VM>", "expected a DS_DRIVER_ACTION_DATA document, got 'VM'"),
        ("<DS_DRIVER_ACTION_DATA/>", "has no DATASTORE"),
        (action_xml(datastore="<DATASTORE><NAME>x</NAME></DATASTORE>"), "DATASTORE has no ID"),
        (action_xml(image_xml(SIZE="-5")), "IMAGE/SIZE must be a whole number from 0 to"),
        (action_xml(image_xml(SIZE="12abc")), "IMAGE/SIZE must be a whole number"),
        (action_xml(image_xml(SIZE="+5")), "IMAGE/SIZE must be a whole number"),
        (action_xml(image_xml(SIZE=" 5")), "IMAGE/SIZE must be a whole number"),
        (action_xml(image_xml(SIZE="1e3")), "IMAGE/SIZE must be a whole number"),
        (action_xml(image_xml(SIZE="9" * 30)), "IMAGE/SIZE must be a whole number"),
        (action_xml(image_xml(SIZE=str(2**41))), "IMAGE/SIZE must be a whole number"),
        (action_xml(image_xml(ID="-7")), "IMAGE/ID must be a whole number"),
        (action_xml(image_xml(ID=str(2**31))), "IMAGE/ID must be a whole number"),
        (action_xml(image_xml(CLONING_ID="-2")), "IMAGE/CLONING_ID must be a whole number"),
        (action_xml(image_xml(PERSISTENT="maybe")), "IMAGE/PERSISTENT must be YES or NO"),
        (action_xml(image_xml(TYPE="OS; reboot")), "IMAGE/TYPE must be a number or one of"),
        (action_xml(datastore=datastore_xml(ds_type="-1")), "DATASTORE/TYPE must be a whole number"),
        (action_xml(datastore=datastore_xml(ds_id="100\n")), "DATASTORE/ID must be a whole number"),
    ],
)
def test_hostile_or_broken_xml_is_refused_with_one_clear_line(xml: str | bytes, reason: str) -> None:
    encoded = b64(xml)
    message = failure(["7"], io.BytesIO(encoded))
    assert reason in message
    assert "root:" not in message  # nothing of /etc/passwd leaked through an external entity


def test_values_are_returned_verbatim_for_later_checks() -> None:
    hostile = "/ipfs/x; rm -rf / \n$(reboot)"
    action, _ = read_ds_action(["7"], io.BytesIO(b64(action_xml(image_xml(PATH=hostile)))))
    assert action.image is not None
    assert action.image.path == hostile


# ---------------------------------------------------------------------------- CLI XML documents


def test_oneimage_show_output_parses_into_an_image() -> None:
    image = parse_image_xml(image_xml(SOURCE="one-ipfs/ds100/img7", FORMAT="qcow2", PERSISTENT="1"))
    assert (image.id, image.source, image.format, image.persistent) == (
        7,
        "one-ipfs/ds100/img7",
        "qcow2",
        True,
    )


def test_onedatastore_show_output_parses_into_a_datastore() -> None:
    xml = '<?xml version="1.0" encoding="UTF-8"?>\n' + datastore_xml(ds_id="101", ds_type="1")
    datastore = parse_datastore_xml(xml)
    assert (datastore.id, datastore.type, datastore.tm_mad) == (101, 1, "ipfs")


def test_onevm_show_output_gives_each_disk_and_the_last_host() -> None:
    vm = parse_vm_xml(VM_XML)
    assert (vm.id, vm.state, vm.lcm_state) == (42, 3, 1)
    assert vm.history is not None
    assert (vm.history.hostname, vm.history.datastore_id) == ("h2", 101)
    clone, persistent, swap = vm.disks
    assert clone.disk_id == 0
    assert clone.image_id == 7
    assert clone.source == "one-ipfs/ds100/img7"
    assert clone.datastore_id == 100
    assert clone.tm_mad == "ipfs"
    assert (clone.size_mb, clone.original_size_mb) == (10240, 2252)
    assert clone.format == "qcow2"
    assert (clone.clone, clone.persistent, clone.type) == (True, False, "FILE")
    assert (persistent.disk_id, persistent.image_id, persistent.clone, persistent.persistent) == (
        1,
        8,
        False,
        True,
    )
    assert (swap.disk_id, swap.image_id, swap.datastore_id, swap.source, swap.tm_mad) == (
        2,
        None,
        None,
        "",
        "",
    )
    assert swap.type == "swap"


def test_a_vm_never_deployed_has_no_history() -> None:
    vm = parse_vm_xml(
        "<VM><ID>5</ID><STATE>1</STATE><LCM_STATE>0</LCM_STATE><TEMPLATE/><HISTORY_RECORDS/></VM>"
    )
    assert vm.history is None
    assert vm.disks == []


@pytest.mark.parametrize(
    ("xml", "reason"),
    [
        (VM_XML.replace("<DISK_ID><![CDATA[1]]></DISK_ID>", ""), "DISK has no DISK_ID"),
        (VM_XML.replace("<![CDATA[10240]]>", "<![CDATA[-10240]]>"), "DISK/SIZE must be a whole number"),
        (
            VM_XML.replace("<![CDATA[YES]]></CLONE>", "<![CDATA[SURE]]></CLONE>"),
            "DISK/CLONE must be YES or NO",
        ),
        (VM_XML.replace("<DS_ID>101</DS_ID>", "<DS_ID></DS_ID>"), "HISTORY has no DS_ID"),
        (VM_XML.replace("<STATE>3</STATE>", ""), "VM has no STATE"),
        (datastore_xml(), "expected a VM document, got 'DATASTORE'"),
    ],
)
def test_broken_vm_xml_is_refused(xml: str, reason: str) -> None:
    with pytest.raises(InvalidInput, match=re.escape(reason)):
        parse_vm_xml(xml)


def test_each_cli_document_must_have_its_own_root() -> None:
    with pytest.raises(InvalidInput, match="expected a IMAGE document, got 'DATASTORE'"):
        parse_image_xml(datastore_xml())
    with pytest.raises(InvalidInput, match="expected a DATASTORE document, got 'IMAGE'"):
        parse_datastore_xml(image_xml())


def test_cli_documents_are_capped() -> None:
    with pytest.raises(InvalidInput, match="larger than 16 MiB"):
        parse_vm_xml("<VM>" + " " * MAX_PAYLOAD + "</VM>")


# ------------------------------------------------------------------------ TM host:path arguments


@pytest.mark.parametrize(
    ("text", "host", "path"),
    [
        ("h1:/var/lib/one//datastores/0/42/disk.0", "h1", "/var/lib/one/datastores/0/42/disk.0"),
        ("fe:/ipfs/" + CID, "fe", "/ipfs/" + CID),
        (
            "node-7.example.org:/var/lib/one/datastores/0/42/",
            "node-7.example.org",
            "/var/lib/one/datastores/0/42",
        ),
        ("198.18.0.11:///var//lib/one", "198.18.0.11", "/var/lib/one"),
        ("h1:/", "h1", "/"),
        ("h1://", "h1", "/"),
        ("kvm_host_1:/srv/one/disk.0", "kvm_host_1", "/srv/one/disk.0"),
    ],
)
def test_tm_arguments_split_on_the_first_colon_like_arg_host_and_arg_path(
    text: str, host: str, path: str
) -> None:
    assert Location.parse(text) == Location(host, path)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("-oProxyCommand=touch /tmp/pwned:/var/lib/one", "not a host name"),
        ("-p2222:/var/lib/one", "not a host name"),
        ("h1 -v:/var/lib/one", "not a host name"),
        ("h1;reboot:/var/lib/one", "not a host name"),
        ("$(id):/var/lib/one", "not a host name"),
        ("`id`:/x", "not a host name"),
        ("h1.:/x", "not a host name"),
        ("-h1:/x", "not a host name"),
        ("h1-:/x", "not a host name"),
        ("[::1]:/x", "not a host name"),
        (":/var/lib/one", "not a host name"),
        ("h\u0131:/x", "not a host name"),
        ("a" * 64 + ":/x", "not a host name"),
        (("a" * 60 + ".") * 5 + "org:/x", "not a host name"),
        ("/var/lib/one/datastores/0/42/disk.0", "not a host:path argument"),
        ("h1:var/lib/one", "not absolute"),
        ("h1:", "not absolute"),
        ("h1:/var/lib/one/../../etc/shadow", "may not contain '..'"),
        ("h1:/var/lib/one/..", "may not contain '..'"),
        ("h1:/var/lib/one/disk.0\n", "may not contain '\\n'"),
        ("h1:/var/lib/one/disk.0\0", "may not contain '\\x00'"),
        ("h1:/var/lib one", "may not contain ' '"),
        ("h1:/var/lib/one;reboot", "may not contain ';'"),
        ("h1:/var/lib/$(id)", "may not contain '$'"),
        ("h1:/var/lib/`id`", "may not contain '`'"),
        ("h1:/var/lib/'x'", 'may not contain "\'"'),
        ("h1:/a:b", "may not contain ':'"),
        ("h1:/var/lib/\u202eone", "may not contain '\\u202e'"),
        ("h1:/" + "a" * 5000, "more than 4096 characters"),
    ],
)
def test_hostile_tm_arguments_are_refused(text: str, reason: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        Location.parse(text)
    assert reason in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_disk_path_names_its_vm_folder_and_disk() -> None:
    path = Location.parse("h1:/var/lib/one//datastores/0/42/disk.3").path
    assert parse_disk_path(path) == DiskPath("/var/lib/one/datastores/0/42", 42, 3)
    assert disk_id_of(path) == 3


@pytest.mark.parametrize(
    "path",
    [
        "/var/lib/one/datastores/0/42",
        "/var/lib/one/datastores/0/42/disk.3.snap/1",
        "/var/lib/one/datastores/0/42/disk.x",
        "/var/lib/one/datastores/0/42/disk.",
        "/var/lib/one/datastores/0/42/kernel",
        "/var/lib/one/datastores/0/vm/disk.0",
        "disk.0",
    ],
)
def test_other_paths_are_not_disks(path: str) -> None:
    assert parse_disk_path(path) is None
    assert disk_id_of(path) is None


# ------------------------------------------------------------------------------ driver output

# DriverExecHelper#get_info_from_execution: the stderr lines OpenNebula treats as log lines.
MANAGER_LOG_LINE = re.compile(r"^(ERROR|INFO|WARN|DEBUG):\s+(\d+)?\s*(.*)$")


def as_opennebula_sees_it(stderr: str) -> tuple[list[tuple[str, str, str]], str]:
    """(LOG lines as severity, id, text; FAILURE info) the way the driver managers read stderr."""
    logs: list[tuple[str, str, str]] = []
    plain: list[str] = []
    for line in stderr.splitlines():
        match = MANAGER_LOG_LINE.match(line)
        if match:
            logs.append((match.group(1), match.group(2) or "-1", match.group(3)))
        else:
            plain.append(line.strip())
    return logs, "".join(plain) or "-"


def raising(error: Exception) -> Callable[[], None]:
    def action() -> None:
        raise error

    return action


def test_success_prints_exactly_the_result_on_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_action(lambda: "one-ipfs/ds100/img7 qcow2\n") == 0
    out, err = capsys.readouterr()
    assert out == "one-ipfs/ds100/img7 qcow2\n"
    assert err == ""


def test_monitor_result_keeps_its_lines(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_action(lambda: "USED_MB=9720\nTOTAL_MB=20480\nFREE_MB=20480") == 0
    assert capsys.readouterr().out == "USED_MB=9720\nTOTAL_MB=20480\nFREE_MB=20480\n"


def test_an_action_without_result_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_action(lambda: None) == 0
    assert capsys.readouterr() == ("", "")


def test_a_refused_action_shows_its_reason_as_the_failure_info(capsys: pytest.CaptureFixture[str]) -> None:
    def cp() -> str:
        log_info("pinning bafy... on the datastore's node")
        raise ContentNotFound("no reachable node provides bafy...\nwithin 60 s")

    assert run_action(cp, "datastore cp") == 1
    out, err = capsys.readouterr()
    assert out == ""
    logs, info = as_opennebula_sees_it(err)
    assert info == "no reachable node provides bafy... within 60 s"
    assert logs == [
        ("INFO", "-1", "pinning bafy... on the datastore's node"),
        ("ERROR", "-1", "no reachable node provides bafy... within 60 s"),
    ]


def test_a_failure_s_reason_is_the_first_stderr_line_for_opennebula_6_which_shows_all_of_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    def clone() -> str:
        log_info("deploying bafy... to h1:/var/lib/one/datastores/0/7/disk.0")
        raise ContentNotFound("h1: no reachable node provides bafy...")

    assert run_action(clone, "tm clone") == 1
    err = capsys.readouterr().err
    assert err.splitlines()[0] == "h1: no reachable node provides bafy..."
    assert as_opennebula_sees_it(err)[1] == "h1: no reachable node provides bafy..."


def test_the_error_exit_code_is_kept_but_never_zero(capsys: pytest.CaptureFixture[str]) -> None:
    class Retry(OneIpfsError):
        exit_code = 3

    class Broken(OneIpfsError):
        exit_code = 0

    assert run_action(raising(Retry("busy"))) == 3
    assert run_action(raising(Broken("oops"))) == 1
    capsys.readouterr()


def test_a_failure_message_cannot_pass_for_a_log_line_or_forge_lines(
    capsys: pytest.CaptureFixture[str],
) -> None:
    def rm() -> None:
        raise InvalidInput("ERROR: 7 fake\r\nINFO: forged line\x1b[2J")

    assert run_action(rm) == 1
    logs, info = as_opennebula_sees_it(capsys.readouterr().err)
    assert info == "one-ipfs: ERROR: 7 fake INFO: forged line?[2J"
    assert len(logs) == 1


def test_an_empty_error_message_still_gives_a_reason(capsys: pytest.CaptureFixture[str]) -> None:
    assert run_action(raising(InvalidInput())) == 1
    _, info = as_opennebula_sees_it(capsys.readouterr().err)
    assert info == "InvalidInput"


def test_a_bug_is_logged_with_its_traceback_and_one_plain_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ONE_IPFS_TEST_SECRET", "s3cr3t-token")

    def clone() -> str:
        token = "s3cr3t-token"
        return str({"auth": token}["missing"])

    assert run_action(clone, "tm clone") == INTERNAL_ERROR_EXIT
    out, err = capsys.readouterr()
    assert out == ""
    logs, info = as_opennebula_sees_it(err)
    assert info == "Internal error in one-ipfs tm clone: KeyError: 'missing'"
    texts = [text for _, _, text in logs]
    assert texts[0] == "Traceback (most recent call last):"
    assert any("in clone" in text for text in texts)
    assert texts[-1] == "KeyError: 'missing'"
    assert all(severity == "ERROR" for severity, _, _ in logs)
    assert "s3cr3t" not in err


def test_log_lines_are_flattened_and_keep_their_numbers_out_of_the_log_id(
    capsys: pytest.CaptureFixture[str],
) -> None:
    log_info("added 512 MiB\nas bafy...")
    log_error("42 disks\tfailed")
    log_info("x" * 10_000)
    logs, info = as_opennebula_sees_it(capsys.readouterr().err)
    assert info == "-"
    assert logs[0] == ("INFO", "-1", "added 512 MiB as bafy...")
    assert logs[1] == ("ERROR", "-1", "one-ipfs: 42 disks failed")
    assert len(logs[2][2]) == 4003


def test_a_host_s_log_line_starting_with_a_number_is_never_read_as_a_vm_id(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Seen under genuine oned 7.4.0: "INFO: 312 block(s) came from ..." logged to VM 312, which did not
    # exist, and oned crashed.
    assert relay_log("INFO: 312 block(s) came from the other hosts that held them")
    assert relay_log("WARN: slow\tpeer")
    assert not relay_log("h1: cannot write the disk")
    assert not relay_log("INFO:no space after the colon")
    logs, _ = as_opennebula_sees_it(capsys.readouterr().err)
    assert logs == [
        ("INFO", "-1", "one-ipfs: 312 block(s) came from the other hosts that held them"),
        ("WARN", "-1", "slow peer"),
    ]
