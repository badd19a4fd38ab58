"""A backup datastore's backups by name, and their increments put back together.

OpenNebula's incremental backups are a qcow2 chain: increment 0 a whole disk, each later one a qcow2 file of
the blocks changed since, its backing link left dangling (``disk.<id>.<increment>`` in each backup's
folder). A restore needs the disk as the chain's last increment shows it, and ``increment_flatten`` one
backup in place of the oldest increments: both are made here, on the frontend, from the blocks its node
holds (``qemu-img`` rebases each file on the one before, then writes the chain out as one qcow2 file).
"""

from __future__ import annotations

import json
import re
import secrets
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from one_ipfs import image_store
from one_ipfs.config import DatastoreConfig, state_dir
from one_ipfs.datastore import content
from one_ipfs.errors import InvalidInput, InvalidIpfsPath
from one_ipfs.ipfs.paths import parse_cid
from one_ipfs.opennebula.documents import BackupIncrements
from one_ipfs.opennebula.output import log_info

_BACKUP_ID = re.compile(r"^([0-9a-f]{12})-([A-Za-z0-9]{1,256})$")
STAGING = "/.one-ipfs-backup-flatten"
"""Where the frontend's MFS assembles a flattened backup before it is pinned."""


@dataclass(frozen=True)
class BackupId:
    """A backup's SOURCE: ``<token>-<cid>``. The token makes each backup its own hold, so that two
    backups with the very same content are released one at a time."""

    token: str
    cid: str

    def __str__(self) -> str:
        return f"{self.token}-{self.cid}"

    @property
    def hold_name(self) -> str:
        return f"backup-{self.token}"

    @classmethod
    def parse(cls, source: str) -> BackupId:
        match = _BACKUP_ID.fullmatch(source)
        if match is None:
            raise InvalidIpfsPath(
                f"{source[:200]!r} is not a backup of an ipfs backup datastore (<token>-<cid>)"
            )
        try:
            parse_cid(match.group(2))
        except InvalidInput:
            raise InvalidIpfsPath(f"{source[:200]!r} names no valid CID") from None
        return cls(match.group(1), match.group(2))

    @classmethod
    def new(cls, cid: str) -> BackupId:
        return cls(secrets.token_hex(6), cid)


@dataclass(frozen=True)
class Increment:
    id: int
    backup: BackupId

    def disk(self, disk_id: int) -> str:
        """The IPFS path of one disk's file in this increment's folder."""
        return f"/ipfs/{self.backup.cid}/disk.{disk_id}.{self.id}"

    def __str__(self) -> str:
        return f"{self.id}:{self.backup}"


def chain(increments: BackupIncrements, up_to: int | None = None) -> list[Increment]:
    """The increments oned lists, up to ``up_to`` (all of them for None)."""
    links = [
        Increment(increment_id, BackupId.parse(source))
        for increment_id, source in increments.sources
        if up_to is None or increment_id <= up_to
    ]
    if not links:
        raise InvalidInput(f"the backup has no increment {up_to}: it starts at {increments.sources[0][0]}")
    return links


def disk_cid(links: list[Increment], disk_id: int, config: DatastoreConfig) -> str:
    """The CID of a disk as the chain's last increment has it. A chain of one is its own file; a longer
    one is flattened and added to the frontend's node unpinned: whoever asked (a restored image's ``cp``,
    a restore's download) reads it from there, and nothing is left pinned if they never do."""
    if len(links) == 1:
        return image_store.client(config).files_stat(links[0].disk(disk_id), timeout=config.stall_timeout).cid
    with _scratch() as folder:
        flat = _flatten(links, disk_id, folder, config)
        return image_store.client(config).add(flat, settings=config.import_settings, pin=False).cid


def merge(links: list[Increment], disk_ids: tuple[int, ...], config: DatastoreConfig) -> BackupId:
    """One backup holding what the chain ``links`` ends with, pinned under a hold of its own: its
    ``vm.xml`` is the last increment's, and each disk the chain flattened, named for the last increment
    (the backups after it rebase on that name). The caller releases the increments it replaces."""
    last = links[-1]
    node = image_store.client(config)
    backup = None
    staging = f"{STAGING}/{secrets.token_hex(6)}"
    try:
        with _scratch() as folder:
            for disk_id in disk_ids:
                flat = _flatten(links, disk_id, folder, config)
                added = node.add(flat, settings=config.import_settings, pin=False)
                node.files_cp(f"/ipfs/{added.cid}", f"{staging}/disk.{disk_id}.{last.id}")
                flat.unlink()
        node.files_cp(f"/ipfs/{last.backup.cid}/vm.xml", f"{staging}/vm.xml")
        backup = BackupId.new(node.files_stat(staging, timeout=config.stall_timeout).cid)
        image_store.hold(backup.cid, backup.hold_name, config)
    finally:
        node.files_rm(staging, force=True)
    log_info(f"increments {links[0].id} to {last.id} are one backup now: {backup}")
    return backup


def _flatten(links: list[Increment], disk_id: int, folder: Path, config: DatastoreConfig) -> Path:
    """Read each increment's file of the disk, link each to the one before, and write the chain's view
    out as one qcow2 file. The links qemu-img follows are only those set here: the first file's backing
    link is cut, and a file naming an external data file is refused."""
    node = image_store.client(config)
    files: list[Path] = []
    for link in links:
        path = folder / f"disk.{disk_id}.{link.id}"
        with open(path, "wb") as out:
            for piece in node.cat(link.disk(disk_id), timeout=config.transfer_timeout):
                out.write(piece)
        _require_plain_qcow2(path, link)
        backing = ["-b", str(files[-1]), "-F", "qcow2"] if files else ["-b", ""]
        _qemu_img(["rebase", "-u", "-f", "qcow2", *backing, str(path)], config)
        files.append(path)
    flat = folder / f"disk.{disk_id}.flat"
    _qemu_img(["convert", "-f", "qcow2", "-O", "qcow2", str(files[-1]), str(flat)], config)
    for path in files:
        path.unlink()
    return flat


def _require_plain_qcow2(path: Path, link: Increment) -> None:
    info = json.loads(content.run_tool(["qemu-img", "info", "--output=json", "-f", "qcow2", str(path)]))
    if info.get("format") != "qcow2" or "data-file" in info.get("format-specific", {}).get("data", {}):
        raise InvalidInput(
            f"{path.name} of backup {link.backup} is not a qcow2 file of its own, as prebackup writes them"
        )


def _qemu_img(argv: list[str], config: DatastoreConfig) -> None:
    content.run_tool(["qemu-img", *argv], timeout=config.transfer_timeout)


@contextmanager
def _scratch() -> Iterator[Path]:
    scratch = state_dir() / "tmp"
    scratch.mkdir(parents=True, exist_ok=True, mode=0o700)
    with tempfile.TemporaryDirectory(dir=scratch) as folder:
        yield Path(folder)
