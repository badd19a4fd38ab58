"""The system datastore's ``mv``, ``delete`` and ``mvds`` against hostile arguments and manifests, and a
folder that fails half-way into IPFS, without a bed: one line, and nothing half done (no pin left, no
image version recorded, no host folder removed, no manifest written or lost)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from one_ipfs import image_store
from one_ipfs.config import DatastoreConfig, load_config
from one_ipfs.errors import InvalidInput, NotSupported, StorageError
from one_ipfs.host import protocol
from one_ipfs.hosts import calls as hosts
from one_ipfs.opennebula import oned
from one_ipfs.opennebula.documents import ImageTemplate, VmDisk, VmHistory, VmTemplate
from one_ipfs.transfer import actions, system

FOLDER = "/var/lib/one/datastores/100/7"
PERSISTENT = VmDisk(0, 3, "one-ipfs/ds1/img3", 1, "ipfs", 8, 8, "raw", True, False, "FILE")
CID = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
VOLATILE = VmDisk(1, None, "", None, "", 16, None, "raw", False, False, "FS")


@pytest.fixture
def host_calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []

    def call(host: str, request: protocol.Request[object], *, timeout: float) -> object:
        calls.append(request.command)
        return request.result()

    monkeypatch.setattr(hosts, "call", call)
    monkeypatch.setattr(actions, "is_frontend", lambda host: host == "fe")
    monkeypatch.setattr(actions, "datastore_config", lambda datastore_id: load_config({}, defaults={}))
    return calls


@pytest.fixture
def pinned(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The datastore node's pins (name -> CID) as ``image_store.hold`` and ``release`` leave them."""
    held: dict[str, str] = {}

    def hold(cid: str, name: str, config: DatastoreConfig, *, total_bytes: int | None = None) -> None:
        held[name] = cid

    def release(cid: str, name: str, config: DatastoreConfig) -> None:
        held.pop(name, None)

    monkeypatch.setattr(image_store, "hold", hold)
    monkeypatch.setattr(image_store, "release", release)
    return held


def parked_folder(tmp_path: Path, files: list[dict[str, object]]) -> Path:
    folder = tmp_path / "100" / "7"
    folder.mkdir(parents=True)
    (folder / system.MANIFEST).write_text(json.dumps({"files": files}))
    return folder


@pytest.mark.parametrize(
    ("source", "target"),
    [
        ("h1:/var/lib/one/datastores/100/8", "fe:/var/lib/one/datastores/100/7"),
        ("h1:/var/lib/one/datastores/101/7", "fe:/var/lib/one/datastores/101/7"),
        ("h1:/7", "fe:/var/lib/one/datastores/100/7"),
    ],
)
def test_a_folder_move_outside_the_vms_folder_in_its_datastore_is_refused(
    host_calls: list[str], source: str, target: str
) -> None:
    with pytest.raises(InvalidInput, match="is not the folder of VM 7 in datastore 100"):
        system.mv(actions.TmCall([source, target, "7", "100"], io.BytesIO()))
    assert host_calls == []


@pytest.mark.parametrize(
    "entry",
    [
        {"name": "../../../etc/passwd", "cid": CID, "size": 1, "format": "raw"},
        {"name": "disk.0", "cid": CID, "size": 1, "format": "vmdk"},
        {"name": "disk.0"},
        {"name": "disk.0", "cid": "bafy --api=http://elsewhere", "size": 1, "format": "raw"},
    ],
)
def test_a_manifest_naming_anything_but_a_vm_folders_file_is_refused(
    host_calls: list[str], tmp_path: Path, entry: dict[str, object]
) -> None:
    folder = tmp_path / "100" / "7"
    folder.mkdir(parents=True)
    (folder / system.MANIFEST).write_text(json.dumps({"files": [entry]}))

    with pytest.raises(StorageError, match=system.MANIFEST):
        system.mv(
            actions.TmCall([f"fe:{folder}", "h1:/var/lib/one/datastores/100/7", "7", "100"], io.BytesIO())
        )
    assert host_calls == []
    assert (folder / system.MANIFEST).exists()


def test_a_folder_that_fails_half_way_into_ipfs_releases_what_was_pinned_and_stays_on_its_host(
    monkeypatch: pytest.MonkeyPatch, host_calls: list[str], pinned: dict[str, str], tmp_path: Path
) -> None:
    vm = VmTemplate(7, 3, 31, [PERSISTENT, VOLATILE], VmHistory("h1", 100))
    monkeypatch.setattr(oned, "show_vm", lambda vm_id: vm)
    added = iter([("bafy-disk0", 1), ("bafy-disk1", 1)])
    monkeypatch.setattr(actions, "add_on_host", lambda *args, **kwargs: next(added))

    def hold(cid: str, name: str, config: DatastoreConfig, *, total_bytes: int | None = None) -> None:
        if cid == "bafy-disk1":
            raise StorageError("the datastore's node is full")
        pinned[name] = cid

    monkeypatch.setattr(image_store, "hold", hold)
    frontend = tmp_path / "100" / "7"

    with pytest.raises(StorageError, match="full"):
        system.mv(actions.TmCall([f"h1:{FOLDER}", f"fe:{frontend}", "7", "100"], io.BytesIO()))
    assert pinned == {}
    assert host_calls == []  # the host's folder was not deleted
    assert not frontend.exists()


@pytest.mark.parametrize(
    ("files", "refusal"),
    [
        ([{"name": "disk.1", "cid": CID, "size": 1, "format": "raw"}], "never put into IPFS"),
        ([{"name": "disk.0", "cid": CID, "size": 1, "format": "qcow2"}], "resume the VM to save it"),
    ],
)
def test_a_persistent_disk_its_parked_folder_cannot_give_as_its_image_is_not_saved(
    monkeypatch: pytest.MonkeyPatch,
    host_calls: list[str],
    pinned: dict[str, str],
    tmp_path: Path,
    files: list[dict[str, object]],
    refusal: str,
) -> None:
    folder = parked_folder(tmp_path, files)
    image = ImageTemplate(3, "one-ipfs/ds1/img3", "", 8, "raw", "", "OS", True, None, None, {})
    updates: list[int] = []
    monkeypatch.setattr(oned, "show_vm", lambda vm_id: VmTemplate(7, 9, 0, [PERSISTENT], None))
    monkeypatch.setattr(oned, "show_image", lambda image_id: image)
    monkeypatch.setattr(oned, "update_image", lambda image_id, attributes: updates.append(image_id))

    with pytest.raises((StorageError, NotSupported), match=refusal):
        system.mvds(actions.TmCall([f"fe:{folder}/disk.0", "one-ipfs/ds1/img3", "7", "1"], io.BytesIO()))
    assert (pinned, updates, host_calls) == ({}, [], [])


def test_the_delete_of_a_parked_folder_not_the_vms_own_releases_nothing(
    host_calls: list[str], pinned: dict[str, str], tmp_path: Path
) -> None:
    folder = parked_folder(tmp_path, [{"name": "disk.0", "cid": CID, "size": 1, "format": "raw"}])
    pinned["one-ipfs-vm7-disk.0"] = CID

    with pytest.raises(InvalidInput, match="is not the folder of VM 8 in datastore 100"):
        system.delete(actions.TmCall([f"fe:{folder}", "8", "100"], io.BytesIO()))
    assert pinned == {"one-ipfs-vm7-disk.0": CID}
    assert (folder / system.MANIFEST).exists()


@pytest.mark.parametrize(
    "args",
    [
        [f"h1:{FOLDER}", f"fe:{FOLDER}", "7"],
        [f"h1:{FOLDER}", f"fe:{FOLDER}", "7; reboot", "100"],
        [f"h1:{FOLDER}", f"fe:{FOLDER}", "7", "-100"],
    ],
)
def test_a_folder_move_with_bad_arguments_is_one_line(host_calls: list[str], args: list[str]) -> None:
    with pytest.raises(InvalidInput) as refused:
        system.mv(actions.TmCall(args, io.BytesIO()))
    assert "\n" not in str(refused.value)
    assert host_calls == []


@pytest.mark.parametrize(
    ("forwarded_by", "made"), [([], ["release", "delete-folder"]), (["ssh"], ["release"])]
)
def test_a_live_migration_removes_the_source_folder_only_when_the_ipfs_tm_is_the_system_datastores(
    monkeypatch: pytest.MonkeyPatch, host_calls: list[str], forwarded_by: list[str], made: list[str]
) -> None:
    vm = VmTemplate(7, 3, 3, [PERSISTENT], VmHistory("h2", 100))
    monkeypatch.setattr(oned, "show_vm", lambda vm_id: vm)

    actions.ACTIONS["postmigrate"](
        actions.TmCall(["h1", "h2", FOLDER, "7", "100", *forwarded_by], io.BytesIO())
    )
    assert host_calls == made


def test_a_parked_persistent_disk_saved_twice_is_one_new_version_of_its_image(
    monkeypatch: pytest.MonkeyPatch, host_calls: list[str], pinned: dict[str, str], tmp_path: Path
) -> None:
    """``onevm recover --retry`` of a terminate runs ``mvds`` again: the parked CID is already the image's."""
    folder = parked_folder(tmp_path, [{"name": "disk.0", "cid": CID, "size": 1, "format": "raw"}])
    template = {"IPFS_CID": "bafkqaaa", "IPFS_VERSIONS": "1:bafkqaaa"}
    monkeypatch.setattr(oned, "show_vm", lambda vm_id: VmTemplate(7, 9, 0, [PERSISTENT], None))
    monkeypatch.setattr(
        oned,
        "show_image",
        lambda image_id: ImageTemplate(
            3, "one-ipfs/ds1/img3", "", 8, "raw", "", "OS", True, None, None, template
        ),
    )
    monkeypatch.setattr(oned, "update_image", lambda image_id, attributes: template.update(attributes))

    for _ in range(2):
        system.mvds(actions.TmCall([f"fe:{folder}/disk.0", "one-ipfs/ds1/img3", "7", "1"], io.BytesIO()))
    assert template["IPFS_VERSIONS"] == f"1:bafkqaaa 2:{CID}"
    assert pinned == {"one-ds1-img3-v2": CID}
    assert host_calls == []
