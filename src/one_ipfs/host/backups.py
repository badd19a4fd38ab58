"""The host side of the IPFS backup datastore: the backup files OpenNebula's prebackup wrote into a VM
folder's ``backup`` folder become one IPFS directory on this host's node, which the frontend then pins
peer to peer; blocks the node holds already (an earlier backup's, another VM's) are not stored again.
"""

from __future__ import annotations

import re
import stat
from pathlib import Path
from typing import Any

from one_ipfs.errors import ContentNotFound, InvalidInput, StorageError
from one_ipfs.host import log_info
from one_ipfs.host.cache import HostCache, pin_owner
from one_ipfs.host.deploy import Deadline
from one_ipfs.ipfs.rpc import ImportSettings, KuboClient

BACKUP_FOLDER = "backup"
BACKUP_PIN_PREFIX = "one-ipfs-backup-"
STAGING_ROOT = "/.one-ipfs-backups"
TOKEN = re.compile(r"^[0-9a-f]{12}$")
BACKUP_FILE = re.compile(r"^(?:vm\.xml|disk\.(?:[0-9]{1,9}|tpm)\.[0-9]{1,9})$")
"""What prebackup writes: the VM's XML and ``disk.<disk id>.<increment>`` (``disk.tpm.0`` for a TPM)."""


def token(text: str) -> str:
    """The frontend's name for one backup under way: 12 hex digits, nothing a path or option could hide in."""
    if not TOKEN.fullmatch(text):
        raise InvalidInput(f"a backup token is 12 hex digits, not {text[:40]!r}")
    return text


def pin_name(backup_token: str) -> str:
    return BACKUP_PIN_PREFIX + backup_token


def add_backup(
    client: KuboClient,
    cache: HostCache,
    vm_folder: Path,
    backup_token: str,
    *,
    settings: ImportSettings,
    timeout: float,
) -> dict[str, Any]:
    """Add ``<vm folder>/backup`` as one directory and pin it here until the frontend holds it
    (``release_backup``). Every file is checked first, so a refused file adds nothing."""
    deadline = Deadline(timeout, f"adding the backup of {vm_folder}")
    files = backup_files(vm_folder / BACKUP_FOLDER)
    staging = f"{STAGING_ROOT}/{backup_token}"
    total = sum(size for _, size in files)
    log_info(f"adding the backup in {vm_folder / BACKUP_FOLDER} ({total >> 20} MiB) to this host's IPFS node")
    cache.prepare()
    with cache.adding(deadline.left()):
        try:
            for path, _ in files:
                added = client.add(path, settings=settings, pin=False, timeout=deadline.left())
                client.files_cp(f"/ipfs/{added.cid}", f"{staging}/{path.name}")
            cid = client.files_stat(staging, timeout=deadline.left()).cid
            if pin_owner(client, cid) is None:
                client.pin_add(cid, name=pin_name(backup_token), timeout=deadline.left())
        finally:
            client.files_rm(staging, force=True)
    log_info(f"the backup in {vm_folder / BACKUP_FOLDER} is {cid}")
    return {"cid": cid, "size": total}


def release_backup(client: KuboClient, backup_token: str) -> None:
    """Drop this host's pin of a backup (the frontend holds it now, or the backup failed or was cancelled,
    maybe before the frontend heard its CID); content pinned here for any other reason stays."""
    for pin in client.pin_ls(name=pin_name(backup_token)):
        if pin.name == pin_name(backup_token):
            try:
                client.pin_rm(pin.cid)
            except ContentNotFound:
                continue
            log_info(f"unpinned the backup {pin.cid} on this host")


def backup_files(folder: Path) -> list[tuple[Path, int]]:
    """The regular files prebackup wrote, with their sizes; a link, folder or unknown name is refused."""
    if folder.is_symlink():
        raise InvalidInput(f"{folder} is a link: the backup folder must lie in the VM folder")
    try:
        entries = sorted(folder.iterdir())
    except FileNotFoundError:
        raise StorageError(f"{folder} does not exist on this host: prebackup wrote no backup") from None
    except NotADirectoryError:
        raise InvalidInput(f"{folder} is not a folder") from None
    files = []
    for entry in entries:
        info = entry.lstat()
        if not BACKUP_FILE.fullmatch(entry.name) or not stat.S_ISREG(info.st_mode):
            raise InvalidInput(f"{entry} is not a backup file prebackup writes (vm.xml, disk.<id>.<n>)")
        files.append((entry, info.st_size))
    if not any(path.name.startswith("disk.") for path, _ in files):
        raise StorageError(f"{folder} holds no disk: prebackup backed up nothing")
    return files
