"""``one-ipfs install`` / ``uninstall``: the drivers into the remotes tree, their registration into oned.conf
and the exec VMM's vmm_execrc (``kvm-ipfs`` in LIVE_DISK_SNAPSHOTS).

Both are safe to repeat. Each file is only ever replaced atomically, with its mode and owner, after a backup
of the original; uninstall takes out only what install put in.
"""

from __future__ import annotations

import difflib
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from one_ipfs.admin.nodes import Site
from one_ipfs.errors import StorageError
from one_ipfs.opennebula import oned_conf, vmm_execrc
from one_ipfs.opennebula.install import DEFAULTS, DRIVER_DIRS, SOURCE_REMOTES, install_remotes

BACKUP_SUFFIX = ".one-ipfs.bak"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FileChange:
    """One configuration file's edit: its diff (empty when nothing changes) and the backup kept."""

    path: Path
    diff: str
    backup: Path | None


@dataclass(frozen=True)
class Change:
    """What install or uninstall does (or, with ``--print``, would do)."""

    files: tuple[FileChange, ...]
    remotes: tuple[str, ...]


def install(site: Site, python: str, *, dry_run: bool) -> Change:
    edits = _edits(site, oned_conf.register, vmm_execrc.register)
    remotes = tuple(str(site.remotes / d) for d in (*DRIVER_DIRS, DEFAULTS))
    if not dry_run:
        if not site.remotes.is_dir():
            raise StorageError(
                f"the remotes tree {site.remotes} does not exist: is OpenNebula installed here?"
            )
        log.info("copying the drivers and the host bundle into %s, interpreter %s", site.remotes, python)
        try:
            install_remotes(site.remotes, python)
            _give_to_owner(site.remotes, [site.remotes / d for d in (*DRIVER_DIRS, DEFAULTS.parent)])
        except OSError as exc:
            raise StorageError(f"cannot write the drivers into {site.remotes}: {exc}") from exc
    return Change(_apply(edits, dry_run), remotes)


def uninstall(site: Site, *, dry_run: bool) -> Change:
    edits = _edits(site, oned_conf.unregister, vmm_execrc.unregister)
    removed = [site.remotes / d for d in DRIVER_DIRS if (site.remotes / d).exists()]
    defaults = site.remotes / DEFAULTS
    if defaults.exists() and _untouched_defaults(defaults):
        removed.append(defaults)
    if not dry_run:
        try:
            _remove(removed, defaults.parent)
        except OSError as exc:
            raise StorageError(f"cannot remove the drivers from {site.remotes}: {exc}") from exc
    return Change(_apply(edits, dry_run), tuple(map(str, removed)))


Edit = tuple[Path, str, str]
"""A configuration file, its text and the text it gets."""


def _edits(site: Site, oned: Callable[[str], str], vmm: Callable[[str], str]) -> list[Edit]:
    """Both files read and their new text worked out before either is written: a file that cannot be
    edited stops the command with nothing changed. A site without vmm_execrc (no exec VMM) has no
    live snapshots to register."""
    original = _read(site.oned_conf)
    edits = [(site.oned_conf, original, oned(original))]
    if site.vmm_execrc.exists():
        text = _read(site.vmm_execrc)
        edits.append((site.vmm_execrc, text, vmm(text)))
    return edits


def _apply(edits: list[Edit], dry_run: bool) -> tuple[FileChange, ...]:
    changes = []
    for path, original, updated in edits:
        backup = None
        if not dry_run and updated != original:
            backup = _backup(path, original)
            _replace(path, updated)
        changes.append(FileChange(path, _diff(path, original, updated), backup))
    return tuple(changes)


def _remove(paths: list[Path], defaults_dir: Path) -> None:
    for path in paths:
        log.info("removing %s", path)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    if defaults_dir.is_dir() and not any(defaults_dir.iterdir()):
        defaults_dir.rmdir()


def _untouched_defaults(defaults: Path) -> bool:
    """True when ipfs.conf is the shipped one apart from the interpreter line install writes (one that
    cannot be read, or compared, counts as the admin's and is kept)."""

    def settings(path: Path) -> list[str]:
        lines = path.read_text(encoding="utf-8").splitlines()
        return [line for line in lines if line.strip() and not line.startswith("ONE_IPFS_PYTHON=")]

    try:
        return settings(defaults) == settings(SOURCE_REMOTES / DEFAULTS)
    except (OSError, UnicodeDecodeError):
        return False


def _read(path: Path) -> str:
    try:
        with path.open(encoding="utf-8", newline="") as f:
            return f.read()
    except FileNotFoundError:
        raise StorageError(f"no {path.name} at {path}: name it with --oned-conf or --one-location") from None
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc.strerror}") from exc


def _backup(path: Path, original: str) -> Path:
    """``oned.conf.one-ipfs.bak`` (``vmm_execrc.one-ipfs.bak``) holds the file as it was before one-ipfs first
    changed it; a later change of a different file gets a timestamped backup beside it."""
    backup = path.with_name(path.name + BACKUP_SUFFIX)
    if backup.exists() and _read(backup) != original:
        backup = path.with_name(f"{path.name}.one-ipfs.{time.strftime('%Y%m%d-%H%M%S')}.bak")
    if not backup.exists():
        log.info("keeping the original %s as %s", path, backup)
        shutil.copy2(path, backup)
    return backup


def _replace(path: Path, text: str) -> None:
    """Write ``text`` over ``path`` atomically, keeping its mode and owner (oned reads it as oneadmin)."""
    log.info("writing %s (through %s, renamed over it)", path, f".{path.name}.one-ipfs.tmp")
    status = path.stat()
    tmp = path.with_name(f".{path.name}.one-ipfs.tmp")
    try:
        with tmp.open("w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.chmod(tmp, status.st_mode & 0o7777)
        if os.geteuid() == 0:
            os.chown(tmp, status.st_uid, status.st_gid)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StorageError(f"cannot write {path}: {exc.strerror}") from exc


def _give_to_owner(remotes: Path, paths: list[Path]) -> None:
    """Files root copied into the remotes tree belong to its owner, as OpenNebula's own drivers do."""
    if os.geteuid() != 0:
        return
    owner = remotes.stat()
    for top in paths:
        for folder, _, files in os.walk(top):
            os.chown(folder, owner.st_uid, owner.st_gid)
            for name in files:
                os.chown(Path(folder) / name, owner.st_uid, owner.st_gid)


def _diff(path: Path, before: str, after: str) -> str:
    return "".join(
        difflib.unified_diff(
            before.splitlines(keepends=True), after.splitlines(keepends=True), str(path), f"{path} (one-ipfs)"
        )
    )
