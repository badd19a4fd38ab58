"""oned's database, as a folder of XML documents shared by the simulator and its XML-RPC API.

Drivers run as separate processes (as the driver user) and call ``one.image.update`` while the simulator is
in the middle of an action, exactly as a real driver can; the API answers them from threads of its own. So
every object is ``<root>/<kind>/<id>.xml`` and every read-modify-write happens under one ``flock`` that the
API's threads take too. The lock is never held while a driver runs (a driver calling the API would
deadlock); it is re-entrant within a thread so helpers can nest.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

from testbed.one.documents import parse_xml, to_string

KINDS = ("image", "datastore", "vm", "host")


class StateStore:
    """The folder, its lock and the documents in it; ``owner`` (uid, gid) is given every file written."""

    def __init__(self, root: Path, owner: tuple[int, int] | None = None) -> None:
        self.root = root
        self.owner = owner
        self._local = threading.local()
        self._lock_path = root / ".lock"
        for kind in KINDS:
            self._mkdir(root / kind)
        if not self._lock_path.exists():
            self._lock_path.touch()
            self._give(self._lock_path, 0o666)

    def _mkdir(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self._give(path, 0o775)

    def _give(self, path: Path, mode: int) -> None:
        if self.owner is not None:
            os.chown(path, *self.owner)
        os.chmod(path, mode)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        depth = getattr(self._local, "depth", 0)
        if depth:
            self._local.depth = depth + 1
            try:
                yield
            finally:
                self._local.depth -= 1
            return
        with open(self._lock_path, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            self._local.depth = 1
            try:
                yield
            finally:
                self._local.depth = 0
                fcntl.flock(handle, fcntl.LOCK_UN)

    def path(self, kind: str, oid: int) -> Path:
        return self.root / kind / f"{oid}.xml"

    def read(self, kind: str, oid: int) -> ET.Element | None:
        try:
            data = self.path(kind, oid).read_bytes()
        except FileNotFoundError:
            return None
        return parse_xml(data)

    def read_text(self, kind: str, oid: int) -> str | None:
        try:
            return self.path(kind, oid).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None

    def write(self, kind: str, oid: int, root: ET.Element) -> None:
        self.write_file(self.path(kind, oid), to_string(root).encode())

    def write_file(self, path: Path, data: bytes, mode: int = 0o664) -> None:
        """Replace ``path`` atomically so a concurrent reader never sees half a document."""
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(data)
            self._give(Path(temporary), mode)
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise

    def delete(self, kind: str, oid: int) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(kind, oid).unlink()

    def ids(self, kind: str) -> list[int]:
        return sorted(int(p.stem) for p in (self.root / kind).glob("*.xml"))

    def next_id(self, kind: str, first: int = 0) -> int:
        """A new object id: oned never reuses one, so the last id given is remembered, not derived."""
        with self.locked():
            counters_path = self.root / "oids.json"
            counters: dict[str, int] = {}
            if counters_path.exists():
                counters = json.loads(counters_path.read_text(encoding="utf-8"))
            oid = max(counters.get(kind, first - 1) + 1, first)
            counters[kind] = oid
            self.write_file(counters_path, json.dumps(counters).encode())
            return oid

    @contextlib.contextmanager
    def edit(self, kind: str, oid: int) -> Iterator[ET.Element]:
        """Lock, read, hand out, write back: one read-modify-write of one document."""
        with self.locked():
            root = self.read(kind, oid)
            if root is None:
                raise KeyError(f"{kind} {oid} does not exist")
            yield root
            self.write(kind, oid, root)
