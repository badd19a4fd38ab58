"""The IPFS backup datastore's hostile input, without a bed: every argument, SOURCE and backup folder an
action gets is refused with one line before anything is stored or any host is called."""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path

import pytest

from one_ipfs import image_store
from one_ipfs.config import DatastoreConfig, load_config
from one_ipfs.datastore import actions, backups
from one_ipfs.datastore.backup_chain import BackupId
from one_ipfs.errors import Cancelled, InvalidInput, InvalidIpfsPath, NotSupported, StorageError
from one_ipfs.host import __main__ as host_cli
from one_ipfs.host import protocol
from one_ipfs.host.backups import backup_files, token
from one_ipfs.hosts import calls as host_calls
from one_ipfs.opennebula.documents import DsAction, parse_backed_up_vm, read_ds_action
from one_ipfs.opennebula.install import SOURCE_REMOTES
from tests.hostile.corpus import BILLION_LAUGHS, action, b64, datastore, image
from tests.hostile.harness import CID
from tests.support.host_requests import request_line

BACKUP_DS = datastore(TYPE="3", NAME="ipfs-backups", TM_MAD="-")
IMAGE_DS = datastore()
ARGS = ["h1:/var/lib/one//datastores/0/7", "0", "2b0d6c4e-uuid", "-1", "7", "101"]


def vm(mode: str = "FULL") -> str:
    return f"<VM><ID>7</ID><BACKUPS><BACKUP_CONFIG><MODE>{mode}</MODE></BACKUP_CONFIG></BACKUPS></VM>"


def backup_stdin(datastore_xml: str = BACKUP_DS, vm_xml: str | None = None) -> io.BytesIO:
    """What OpenNebula's VM manager pipes into a backup driver: plain XML, not base64."""
    body = datastore_xml + (vm() if vm_xml is None else vm_xml)
    return io.BytesIO(f"<DS_DRIVER_ACTION_DATA>{body}</DS_DRIVER_ACTION_DATA>".encode())


def no_host_call(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> dict[str, str]:
        raise AssertionError("a host was called")

    monkeypatch.setattr(host_calls, "call", refuse)


@pytest.mark.parametrize(
    ("args", "stdin", "reason"),
    [
        (ARGS[:5], backup_stdin(), "not 5 words"),
        ([*ARGS, "extra"], backup_stdin(), "not 7 words"),
        (["h1", *ARGS[1:]], backup_stdin(), "host:/vm/folder"),
        ([":/var/lib/one/datastores/0/7", *ARGS[1:]], backup_stdin(), "host:/vm/folder"),
        (["h1:relative/0/7", *ARGS[1:]], backup_stdin(), "host:/vm/folder"),
        (ARGS, backup_stdin(IMAGE_DS), "is not a backup datastore"),
        (ARGS, backup_stdin(vm_xml="<VM><NAME>x</NAME></VM>"), "VM has no ID"),
        (ARGS, backup_stdin(vm_xml=""), "carries no VM"),
        (ARGS, io.BytesIO(BILLION_LAUGHS.encode()), "DTD or entities"),
        (ARGS, io.BytesIO(b64(action(datastore_xml=BACKUP_DS))), "not well-formed"),
    ],
)
def test_backup_refuses_what_no_vm_manager_sends_before_calling_a_host(
    monkeypatch: pytest.MonkeyPatch, args: list[str], stdin: io.BytesIO, reason: str
) -> None:
    no_host_call(monkeypatch)

    with pytest.raises((InvalidInput, NotSupported), match=reason):
        actions.run("backup", args, stdin)


def test_backup_refuses_a_backup_base_path_it_would_not_read(monkeypatch: pytest.MonkeyPatch) -> None:
    no_host_call(monkeypatch)
    monkeypatch.setenv("BACKUP_BASE_PATH", "/var/lib/one/backups")

    with pytest.raises(NotSupported, match="BACKUP_BASE_PATH"):
        actions.run("backup", ARGS, backup_stdin())


@pytest.mark.parametrize(
    "source",
    [
        "",
        CID,
        f"0123456789ab{CID}",
        f"0123456789AB-{CID}",
        f"0123456789ab-{CID}/../../etc",
        "0123456789ab-not-a-cid",
        "0123456789ab-$(reboot)",
        f"0123456789ab-{CID}\n",
        "one-ipfs/ds100/img7",
        f"0123456789ab-{'Q' * 300}",
    ],
)
def test_rm_and_restore_of_a_backup_refuse_a_source_that_names_no_ipfs_backup(source: str) -> None:
    for name in ("rm", "restore"):
        stdin = io.BytesIO(b64(action(image(SOURCE=source, TYPE="6"), BACKUP_DS)))
        with pytest.raises(InvalidIpfsPath):
            actions.run(name, ["7"], stdin)


def test_a_backup_source_names_its_token_and_directory() -> None:
    parsed = BackupId.parse(f"0123456789ab-{CID}")

    assert (parsed.token, parsed.cid, parsed.hold_name) == ("0123456789ab", CID, "backup-0123456789ab")
    assert str(parsed) == f"0123456789ab-{CID}"


def test_an_image_datastore_has_no_backup_actions_and_a_backup_datastore_no_image_imports() -> None:
    with pytest.raises(NotSupported, match="an image datastore"):
        actions.run("increment_flatten", ["7"], io.BytesIO(b64(action())))
    with pytest.raises(NotSupported, match="a backup datastore"):
        actions.run("cp", ["7"], io.BytesIO(b64(action(datastore_xml=BACKUP_DS))))


def increments(*sources: tuple[str, str], keep_last: int = 2) -> bytes:
    """A backup image of incremental backups as oned sends it to ``increment_flatten``."""
    listed = "".join(f"<INCREMENT><ID>{i}</ID><SOURCE>{source}</SOURCE></INCREMENT>" for i, source in sources)
    backup = image(TYPE="6").replace("</IMAGE>", f"<BACKUP_INCREMENTS>{listed}</BACKUP_INCREMENTS></IMAGE>")
    extra = f"<EXTRA_DATA><KEEP_LAST>{keep_last}</KEEP_LAST></EXTRA_DATA>"
    return b64(
        action(backup, BACKUP_DS).replace("</DS_DRIVER_ACTION_DATA>", f"{extra}</DS_DRIVER_ACTION_DATA>")
    )


@pytest.mark.parametrize(
    ("chain", "error", "reason"),
    [
        (
            (("0", f"0123456789ab-{CID}"), ("1", "not-a-backup"), ("2", f"0123456789ac-{CID}")),
            InvalidIpfsPath,
            "not a backup of an ipfs backup datastore",
        ),
        (
            (("1", f"0123456789ab-{CID}"), ("0", f"0123456789ac-{CID}"), ("2", f"0123456789ad-{CID}")),
            InvalidInput,
            "oldest first",
        ),
        (
            (("0", f"0123456789ab-{CID}"), ("0", f"0123456789ac-{CID}"), ("2", f"0123456789ad-{CID}")),
            InvalidInput,
            "oldest first",
        ),
        (
            (("x", f"0123456789ab-{CID}"), ("1", f"0123456789ac-{CID}"), ("2", f"0123456789ad-{CID}")),
            InvalidInput,
            "whole number",
        ),
    ],
)
def test_increment_flatten_and_rm_refuse_a_chain_oned_does_not_keep_before_touching_a_pin(
    monkeypatch: pytest.MonkeyPatch, chain: tuple[tuple[str, str], ...], error: type[Exception], reason: str
) -> None:
    monkeypatch.setattr(image_store, "registry", lambda config: pytest.fail("a pin was touched"))
    for name in ("increment_flatten", "rm"):
        with pytest.raises(error, match=reason):
            actions.run(name, ["7"], io.BytesIO(increments(*chain)))


def test_increment_flatten_leaves_a_chain_no_longer_than_keep_last_alone(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(image_store, "registry", lambda config: pytest.fail("a pin was touched"))
    chain = (("0", f"0123456789ab-{CID}"), ("1", f"0123456789ac-{CID}"))

    assert backups.increment_flatten(*_flatten_request(increments(*chain, keep_last=2))) is None


def _flatten_request(stdin: bytes) -> tuple[DsAction, DatastoreConfig]:
    parsed, _ = read_ds_action(["7"], io.BytesIO(stdin))
    return parsed, load_config(parsed.datastore.attributes)


@pytest.mark.parametrize("args", [["--increment", "$(id)"], ["-x"], ["-i"], ["-i", "-2"], ["-i", "1", "2"]])
def test_ls_refuses_anything_but_an_increment_id(args: list[str]) -> None:
    with pytest.raises(InvalidInput, match="ls takes only"):
        actions.run("ls", args, io.BytesIO(action(datastore_xml=BACKUP_DS).encode()))


@pytest.mark.parametrize(
    "args",
    [[], ["h1:/x"], ["h1:/x", ""], ["h1:/x", "uuid; kill -9 -1"], ["h1:/x", "u" * 65], ["h1:/x", "a", "b"]],
)
def test_backup_cancel_refuses_anything_but_a_folder_and_a_vm_uuid(args: list[str]) -> None:
    with pytest.raises(InvalidInput, match="VM's UUID"):
        actions.run("backup_cancel", args, io.BytesIO(vm().encode()))


def test_backup_cancel_stops_only_the_backups_of_that_vm() -> None:
    uuid = "2b0d6c4e-1111"
    ours = [
        "python3",
        "-m",
        "one_ipfs.driver",
        "datastore",
        "backup",
        "h1:/d/0/7",
        "0",
        uuid,
        "-1",
        "7",
        "101",
    ]
    prebackup = ["ruby", "/var/lib/one/remotes/tm/ssh/prebackup", "h1:/d/0/7", "0", uuid, "-1", "7", "101"]

    assert backups._is_backup_of(ours, uuid)
    assert backups._is_backup_of(prebackup, uuid)
    assert not backups._is_backup_of(ours, "2b0d6c4e-2222")
    assert not backups._is_backup_of(["python3", "-m", "one_ipfs.driver", "datastore", "cp", uuid], uuid)
    assert not backups._is_backup_of(["sleep", uuid], uuid)


@pytest.mark.parametrize(
    ("xml", "reason"),
    [
        (b"<VM><ID>7</ID><TEMPLATE><DISK><DISK_ID>../0</DISK_ID></DISK></TEMPLATE></VM>", "DISK_ID must be"),
        (b"<VM><TEMPLATE/></VM>", "VM has no ID"),
        (b"<IMAGE><ID>1</ID></IMAGE>", "expected a VM document"),
        (BILLION_LAUGHS.encode(), "DTD or entities"),
    ],
)
def test_a_backups_vm_xml_is_parsed_as_hostile(xml: bytes, reason: str) -> None:
    with pytest.raises(InvalidInput, match=reason):
        parse_backed_up_vm(xml)


def test_a_backups_vm_xml_gives_disks_and_capacity_only() -> None:
    xml = (
        "<VM><ID>7</ID><NAME>web</NAME><TEMPLATE><CPU>1</CPU><MEMORY>128</MEMORY><RAW>x</RAW>"
        "<DISK><DISK_ID>1</DISK_ID></DISK><DISK><DISK_ID>0</DISK_ID></DISK></TEMPLATE></VM>"
    )

    parsed = parse_backed_up_vm(base64.b64decode(base64.b64encode(xml.encode())))

    assert (parsed.id, parsed.name, parsed.disk_ids, parsed.capacity) == (
        7,
        "web",
        (0, 1),
        {"CPU": "1", "MEMORY": "128"},
    )


@pytest.mark.parametrize(
    "text", ["", "0123456789a", "0123456789abc", "0123456789AB", "--dir=/etc", "0123456789a\n"]
)
def test_a_backup_token_is_twelve_hex_digits(text: str) -> None:
    with pytest.raises(InvalidInput, match="12 hex digits"):
        token(text)


@pytest.fixture
def vm_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ONE_IPFS_HOST_ROOT", str(tmp_path))
    folder = tmp_path / "datastores" / "0" / "7"
    (folder / "backup").mkdir(parents=True)
    (folder / "backup" / "vm.xml").write_text("PFZNLz4=")
    return folder


def test_the_host_adds_only_the_files_prebackup_writes(vm_folder: Path) -> None:
    backup = vm_folder / "backup"
    (backup / "disk.0.0").write_bytes(b"qcow2")
    (backup / "disk.tpm.0").write_bytes(b"tpm")

    assert [(path.name, size) for path, size in backup_files(backup)] == [
        ("disk.0.0", 5),
        ("disk.tpm.0", 3),
        ("vm.xml", 8),
    ]


@pytest.mark.parametrize(
    ("plant", "reason"),
    [
        (lambda backup: (backup / "disk.0.0").symlink_to("/etc/shadow"), "not a backup file"),
        (lambda backup: (backup / "disk.0.0").mkdir(), "not a backup file"),
        (lambda backup: (backup / ".ssh").write_bytes(b"key"), "not a backup file"),
        (lambda backup: (backup / "disk.0.0;id").write_bytes(b"x"), "not a backup file"),
        (lambda backup: os.mkfifo(backup / "disk.0.0"), "not a backup file"),
        (lambda backup: None, "holds no disk"),
    ],
)
def test_the_host_refuses_a_backup_folder_with_anything_else(
    vm_folder: Path, plant: object, reason: str
) -> None:
    plant(vm_folder / "backup")  # type: ignore[operator]

    with pytest.raises((InvalidInput, StorageError), match=reason):
        backup_files(vm_folder / "backup")


def test_the_host_refuses_a_backup_folder_that_is_a_link(vm_folder: Path) -> None:
    elsewhere = vm_folder.parent / "elsewhere"
    (vm_folder / "backup").rename(elsewhere)
    (vm_folder / "backup").symlink_to(elsewhere)

    with pytest.raises(InvalidInput, match="is a link"):
        backup_files(vm_folder / "backup")


@pytest.mark.parametrize(
    "words",
    [
        ["--dir", "/var/lib/one/datastores/0", "--token", "0123456789ab"],
        ["--dir", "/var/lib/one/datastores/0/7/../../../../etc", "--token", "0123456789ab"],
        ["--dir", "relative/0/7", "--token", "0123456789ab"],
        ["--dir", "/var/lib/one/datastores/0/7", "--token", "../etc"],
        ["--dir", "/var/lib/one/datastores/0/7", "--token", "0123456789ab", "--chunker", "rabin"],
    ],
)
def test_the_host_command_refuses_hostile_options_in_one_line(
    capsys: pytest.CaptureFixture[str], words: list[str]
) -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("sys.stdin", io.StringIO(request_line(["backup-add", *words])))
        code = host_cli.main()

    lines = [line for line in capsys.readouterr().err.splitlines() if not line.startswith("INFO:")]
    assert code == 1 and len(lines) == 1


@pytest.mark.parametrize("fails_at", ["backup-add", "hold"])
def test_a_backup_cancelled_or_failing_midway_leaves_no_pin_on_the_frontend_or_the_host(
    monkeypatch: pytest.MonkeyPatch, fails_at: str
) -> None:
    """What backup_cancel's SIGTERM does to a backup under way (``Cancelled`` raised where it stands)."""
    calls: list[str] = []

    def on_host(host: str, request: protocol.Request[object], *, timeout: float) -> object:
        calls.append(request.command)
        if request.command == fails_at:
            raise Cancelled("cancelled")
        return protocol.Held(CID, 1 << 20) if isinstance(request, protocol.BackupAdd) else request.result()

    def hold(cid: str, name: str, config: object, total_bytes: int | None = None) -> None:
        calls.append(f"hold {name}")
        if fails_at == "hold":
            raise Cancelled("cancelled")

    monkeypatch.setattr(host_calls, "call", on_host)
    monkeypatch.setattr(image_store, "hold", hold)
    monkeypatch.setattr(image_store, "release", lambda cid, name, config: calls.append(f"release {name}"))

    with pytest.raises(Cancelled):
        actions.run("backup", ARGS, backup_stdin())

    if fails_at == "backup-add":
        assert calls == ["backup-add", "backup-release"]
    else:
        assert [call.split(" ")[0] for call in calls] == ["backup-add", "hold", "release", "backup-release"]
        assert calls[1].split(" ")[1] == calls[2].split(" ")[1]


def test_a_backup_prints_its_source_size_and_format_and_is_cut_into_qcow2_clusters(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    added: list[protocol.BackupAdd] = []

    def on_host(host: str, request: protocol.Request[object], *, timeout: float) -> object:
        if isinstance(request, protocol.BackupAdd):
            added.append(request)
        return protocol.Held(CID, (5 << 20) + 1)

    monkeypatch.setenv("ONE_IPFS_REMOTES", str(SOURCE_REMOTES))
    monkeypatch.setattr(host_calls, "call", on_host)
    monkeypatch.setattr(image_store, "hold", lambda *args, **kwargs: None)

    printed = actions.run("backup", ARGS, backup_stdin())

    assert printed is not None
    source, size_mb, backup_format = printed.split(" ")
    assert BackupId.parse(source).cid == CID
    assert (size_mb, backup_format) == ("6", "raw")
    assert [request.settings.chunker for request in added] == ["size-65536"]
