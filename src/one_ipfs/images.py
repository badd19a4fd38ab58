"""Images the datastore driver creates: a stable handle for OpenNebula, versions of content in IPFS.

IPFS content is immutable while a persistent image changes, so SOURCE cannot be a CID. SOURCE is a
handle naming the image (``one-ipfs/ds100/img7``), and the image's CIDs, oldest first, are recorded
in OpenNebula's own database as image attributes (``IPFS_CID``, ``IPFS_VERSIONS``), where they
survive the loss of the frontend's IPFS repository and follow OpenNebula HA.

Kubo keeps a single pin per CID, but clones and versions share CIDs, so the datastore's node keeps one
hold per image version: an MFS entry named for it (``/one-ipfs/refs/<cid>/one-ds100-img7-v3``; snapshots,
backups, marketplace apps and catalogues are held alike), and a CID is unpinned only when its last hold
goes. A datastore with IPFS Cluster also pins each held CID through the cluster, replicated to other peers
before the version counts as saved, and unpins it there with the last hold.
"""

from __future__ import annotations

import fcntl
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from one_ipfs.errors import ContentNotFound, InvalidInput, OneIpfsError
from one_ipfs.ipfs.cluster import ClusterClient, Replication
from one_ipfs.ipfs.fetching import fetch_patiently, pin_with_progress
from one_ipfs.ipfs.paths import parse_cid
from one_ipfs.ipfs.rpc import KuboClient

HANDLE_PATTERN = re.compile(r"^one-ipfs/ds(\d{1,9})/img(\d{1,9})$")
VERSION_PATTERN = re.compile(r"^(\d{1,6}):([A-Za-z0-9]{1,128})$")
HOLDS_ROOT = "/one-ipfs/refs"  # the folder nodes have always kept holds in
MAX_VERSIONS = 10000


@dataclass(frozen=True)
class ImageHandle:
    """The SOURCE of an image this driver created: no ``:`` and no blanks, as OpenNebula requires."""

    datastore_id: int
    image_id: int

    def __str__(self) -> str:
        return f"one-ipfs/ds{self.datastore_id}/img{self.image_id}"

    @classmethod
    def parse(cls, source: str) -> ImageHandle | None:
        """The handle in ``source``, or None when SOURCE names fixed content (``/ipfs/...``) instead."""
        match = HANDLE_PATTERN.fullmatch(source)
        if match is None:
            return None
        return cls(int(match.group(1)), int(match.group(2)))

    def hold_name(self, version: int) -> str:
        """The name of one version's hold (and of its pin), unique to this image and version."""
        return f"{self.hold_prefix}{version}"

    @property
    def hold_prefix(self) -> str:
        return f"one-ds{self.datastore_id}-img{self.image_id}-v"

    def snapshot_hold_name(self, snapshot_id: int) -> str:
        """The name of the hold of a disk snapshot saved with the image (``ImageSnapshots``)."""
        return f"one-ds{self.datastore_id}-img{self.image_id}-s{snapshot_id}"


@dataclass(frozen=True)
class ImageVersions:
    """An image's content history, oldest first; the last entry is what a deploy gets."""

    entries: tuple[tuple[int, str], ...] = ()

    @property
    def current(self) -> tuple[int, str] | None:
        return self.entries[-1] if self.entries else None

    @property
    def current_cid(self) -> str | None:
        return self.entries[-1][1] if self.entries else None

    def next_number(self) -> int:
        return self.entries[-1][0] + 1 if self.entries else 1

    def with_version(self, cid: str) -> ImageVersions:
        return ImageVersions((*self.entries, (self.next_number(), cid)))

    @classmethod
    def from_template(cls, template: Mapping[str, str]) -> ImageVersions:
        """Read ``IPFS_VERSIONS`` (``1:<cid> 2:<cid>``) as the drivers wrote it; anything else is refused."""
        return cls(_numbered_cids(template, "IPFS_VERSIONS", "version"))

    def attributes(self) -> dict[str, str]:
        """The image attributes that record this history (written with ``oneimage update``)."""
        return {
            "IPFS_CID": self.current_cid or "",
            "IPFS_VERSIONS": " ".join(f"{number}:{cid}" for number, cid in self.entries),
        }


@dataclass(frozen=True)
class ImageSnapshots:
    """The content of a persistent image's disk snapshots, saved with the disk: oned records a persistent
    disk's snapshots in its image at save-back and lists them in the disk of the next VM, whose host must
    then hold their files. ``IPFS_SNAPSHOTS`` is ``<snapshot id>:<cid> ...``."""

    entries: tuple[tuple[int, str], ...] = ()

    @classmethod
    def from_template(cls, template: Mapping[str, str]) -> ImageSnapshots:
        return cls(_numbered_cids(template, "IPFS_SNAPSHOTS", "snapshot id"))

    def cid(self, snapshot_id: int) -> str | None:
        return dict(self.entries).get(snapshot_id)

    def attributes(self) -> dict[str, str]:
        return {"IPFS_SNAPSHOTS": " ".join(f"{number}:{cid}" for number, cid in self.entries)}


def _numbered_cids(template: Mapping[str, str], attribute: str, what: str) -> tuple[tuple[int, str], ...]:
    """``<number>:<cid>`` entries in increasing order, as the drivers write them; anything else is refused."""
    raw = template.get(attribute, "").split()
    if len(raw) > MAX_VERSIONS:
        raise InvalidInput(f"{attribute} lists more than {MAX_VERSIONS} entries")
    entries: list[tuple[int, str]] = []
    for item in raw:
        match = VERSION_PATTERN.match(item)
        if match is None:
            raise InvalidInput(f"{attribute} holds a malformed entry: {item[:80]!r}")
        number = int(match.group(1))
        if entries and number <= entries[-1][0]:
            raise InvalidInput(f"{attribute} is not in increasing {what} order")
        parse_cid(match.group(2))
        entries.append((number, match.group(2)))
    return tuple(entries)


ProgressLog = Callable[[str], None]


@dataclass(frozen=True)
class Replicas:
    """The IPFS Cluster that keeps copies of a datastore's content beyond its node, and how many."""

    cluster: ClusterClient
    replication: Replication


class ContentRegistry:
    """What the datastore's node holds for images, with one hold per image version."""

    def __init__(self, client: KuboClient, lock_dir: Path, replicas: Replicas | None = None) -> None:
        self.client = client
        self.lock_dir = lock_dir
        self.replicas = replicas

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Holds change one at a time on one frontend, so a release never races a hold."""
        self.lock_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.lock_dir / "holds.lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def hold(
        self,
        cid: str,
        name: str,
        *,
        log: ProgressLog,
        timeout: float,
        stall_timeout: float,
        total_bytes: int | None = None,
    ) -> None:
        """Pin ``cid`` completely on the datastore's node and hold it as ``name``.

        Returns only once every block is local, so an image is READY only when it is safe; with
        ``replicas``, only once the cluster's minimum of peers holds it too, and a version that cannot be
        replicated is released again. Content already pinned as ``name`` (an import pins as it adds) is not
        walked again: Kubo reads every block of a DAG it pins, 0.2 s a GiB even when all are local.
        """
        if not self._pinned_as(cid, name):
            fetch_patiently(self.client, cid, log=log, timeout=timeout, stall_timeout=stall_timeout)
            pin_with_progress(
                self.client,
                cid,
                name,
                log=log,
                timeout=timeout,
                stall_timeout=stall_timeout,
                total_bytes=total_bytes,
            )
        with self._locked():
            # A retried action finds its hold there already: replace it, the content is the same.
            self.client.files_rm(f"{HOLDS_ROOT}/{cid}/{name}", force=True)
            self.client.files_cp(f"/ipfs/{cid}", f"{HOLDS_ROOT}/{cid}/{name}")
            # A release may have unpinned the CID between the fetch and the lock; the blocks are
            # local, so pinning again is quick and keeps pin and hold together.
            if not self._pinned_as(cid, name):
                self.client.pin_add(cid, name=name, timeout=timeout)
        if self.replicas is not None:
            try:
                self.replicas.cluster.replicate(
                    cid, name=name, replication=self.replicas.replication, timeout=timeout, log=log
                )
            except BaseException:
                with suppress(OneIpfsError):  # the replication's own line is the one to show
                    self.release(cid, name)
                raise

    def _pinned_as(self, cid: str, name: str) -> bool:
        return any(pin.name == name for pin in self.client.pin_ls(cid))

    def release(self, cid: str, name: str) -> bool:
        """Drop the hold ``name``; unpin ``cid`` when nothing else holds it. True if unpinned."""
        with self._locked():
            self.client.files_rm(f"{HOLDS_ROOT}/{cid}/{name}", force=True)
            try:
                remaining = self.client.files_ls(f"{HOLDS_ROOT}/{cid}")
            except ContentNotFound:
                remaining = []
            if remaining:
                return False
            self.client.files_rm(f"{HOLDS_ROOT}/{cid}", force=True)
            if self.replicas is not None:
                with suppress(ContentNotFound):
                    self.replicas.cluster.unpin(cid)
            with suppress(ContentNotFound):
                self.client.pin_rm(cid)
            return True

    def release_unrecorded(self, handle: ImageHandle, versions: ImageVersions) -> list[str]:
        """Release the versions of ``handle`` that were pinned but never recorded (a driver killed between
        the two, and the save never retried); return their CIDs. Recorded versions are left alone."""
        recorded = {(cid, handle.hold_name(number)) for number, cid in versions.entries}
        version_name = re.compile(re.escape(handle.hold_prefix) + r"\d{1,6}")
        strays = [
            pin
            for pin in self.client.pin_ls(name=handle.hold_prefix)
            if version_name.fullmatch(pin.name) and (pin.cid, pin.name) not in recorded
        ]
        for pin in strays:
            self.release(pin.cid, pin.name)
        return [pin.cid for pin in strays]
