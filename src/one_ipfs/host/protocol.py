"""What the frontend and a host say to each other: one frozen dataclass per host command (its request) and
one per kind of answer (its result), each sent as one JSON object.

The frontend (``one_ipfs.hosts``) writes a request on the host side's stdin; the host side (``__main__``)
reads it back here, where every field is checked as hostile input (unknown fields, wrong types and bad
values end in one clear InvalidInput line), runs its handler and prints the result as one JSON line, which
the frontend reads back here too. Standard library only: this module ships in the host bundle.

Adding a host command: a request class (``command`` its name, ``result`` its answer's class, each field
declared with ``given(reader)``) listed in ``REQUESTS``, its command in ``commands`` (request -> result) and
that command's line in ``__main__.HANDLERS``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from one_ipfs.defaults import (
    HOST_CACHE_MB,
    HOUSEKEEPING_TIMEOUT,
    KUBO_API,
    PRESENCE_TIMEOUT,
    STALL_TIMEOUT,
    TRANSFER_TIMEOUT,
)
from one_ipfs.errors import InvalidInput
from one_ipfs.host import backups, inputs
from one_ipfs.host.probe import restart_pending
from one_ipfs.ipfs.cluster_peer import PeerSettings
from one_ipfs.ipfs.network import NodeSettings, Peer
from one_ipfs.ipfs.rpc import ImportSettings

T = TypeVar("T")
Reader = Callable[[Any, str], Any]
"""Turns a JSON value into a field's value, or raises InvalidInput naming the field."""

FORMATS = ("raw", "qcow2")
MODES = ("copy", "overlay")
DAEMONS = ("kubo", "cluster")
"""The daemons of a node that a systemd unit runs: Kubo, and its IPFS Cluster peer."""
MAX_REQUEST = 1 << 20
"""Bytes of one request: every one is far smaller."""


# ------------------------------------------------------------------------------------------ readers


def given(read: Reader, default: Any = dataclasses.MISSING) -> Any:
    """A field read from JSON with ``read``; without a default it must be given."""
    return field(default=default, metadata={"read": read})


def text(check: Callable[[str], Any] = str) -> Reader:
    """A JSON string, then ``check`` (one of ``inputs``' checks) on it."""

    def read(value: Any, name: str) -> Any:
        if not isinstance(value, str):
            raise InvalidInput(f"{name} must be a string, not {_kind(value)}")
        return check(value)

    return read


def whole(check: Callable[[str], int]) -> Reader:
    """A JSON integer within what ``check`` (one of ``inputs``' bounded checks) allows."""

    def read(value: Any, name: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidInput(f"{name} must be a whole number, not {_kind(value)}")
        return check(str(value))

    return read


def seconds(value: Any, name: str) -> float:
    """A JSON number of seconds, as ``inputs.timeout`` bounds them."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidInput(f"{name} must be a number of seconds, not {_kind(value)}")
    if not math.isfinite(value):
        raise InvalidInput(f"the timeout must be a finite number of seconds, not {value}")
    return inputs.timeout(repr(float(value)))


def number(value: Any, name: str) -> float:
    """A finite JSON number (a time, a file's mtime)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidInput(f"{name} must be a finite number, not {_kind(value)}")
    return float(value)


def texts(value: Any, name: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise InvalidInput(f"{name} must be a list of strings")
    return tuple(value)


def flag(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidInput(f"{name} must be true or false, not {_kind(value)}")
    return value


def one_of(*choices: Any) -> Reader:
    def read(value: Any, name: str) -> Any:
        if isinstance(value, bool) or value not in choices:
            shown = value[:40] if isinstance(value, str) else _kind(value)
            raise InvalidInput(f"{name} must be one of {', '.join(map(str, choices))}, not {shown!r}")
        return value

    return read


def optional(read: Reader) -> Reader:
    """``read``, or null."""
    return lambda value, name: None if value is None else read(value, name)


def whole_list(value: Any, name: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(type(item) is int for item in value):
        raise InvalidInput(f"{name} must be a list of whole numbers")
    return tuple(value)


def anything(value: Any, name: str) -> Any:
    """A JSON value kept as it is (a listing that the frontend only shows)."""
    return value


def nested(kind: type[Any]) -> Reader:
    """A JSON object read into the dataclass ``kind``."""
    return lambda value, name: from_fields(kind, value, name)


def import_settings(value: Any, name: str) -> ImportSettings:
    """How the host's node must cut and hash what it adds, so that its CIDs are the datastore's."""
    readers = {
        "chunker": text(inputs.chunker),
        "cid_version": one_of(0, 1),
        "raw_leaves": flag,
        "hash": text(inputs.hash_name),
    }
    return ImportSettings(**_read_object(readers, set(), value, name))


def node_settings(value: Any, name: str) -> NodeSettings:
    """Where a Kubo node of the private network listens and whom it peers with."""
    readers = {
        "swarm_addresses": texts,
        "api_address": text(),
        "gateway_address": text(),
        "peers": peer_list,
        "storage_max": text(),
    }
    return NodeSettings(**_read_object(readers, {"swarm_addresses"}, value, name))


def peer_list(value: Any, name: str) -> tuple[Peer, ...]:
    """Members of the private network a Kubo node peers with (``Peering.Peers``)."""
    return tuple(_peer(peer, name) for peer in _list(value, name))


def _peer(value: Any, name: str) -> Peer:
    return Peer(
        **_read_object({"peer_id": text(), "addresses": texts}, {"peer_id", "addresses"}, value, name)
    )


def peer_settings(value: Any, name: str) -> PeerSettings:
    """What makes an IPFS Cluster peer a member of the cluster."""
    readers = {
        "name": text(),
        "listen_address": text(),
        "peers": texts,
        "trusted": texts,
        "kubo_api": text(),
        "rest_api": text(),
    }
    return PeerSettings(**_read_object(readers, set(readers) - {"rest_api"}, value, name))


# ----------------------------------------------------------------------------------- shared parts


@dataclass(frozen=True)
class Node:
    """The host's own Kubo node: its RPC API (loopback only) and the file with its secret, if it has one."""

    api: str = given(text(inputs.api_address), KUBO_API)
    auth_file: str | None = given(optional(text(inputs.secret_file)), None)


@dataclass(frozen=True)
class Cache:
    """The host cache: its folder (None: beside the system datastores) and the MiB it keeps at most."""

    folder: Path | None = given(optional(text(inputs.cache_dir)), None)
    max_mb: int = given(whole(inputs.cache_mb), HOST_CACHE_MB)


R = TypeVar("R")


@dataclass(frozen=True)
class Request(Generic[R]):
    """A host command's request: ``command`` names it on the wire, ``result`` is the class of its answer."""

    command: ClassVar[str] = ""
    result: ClassVar[type[Any]]
    reports_awaiting: ClassVar[bool] = False
    """The result also lists the VMs whose announced disks have not arrived (``HostCache.awaiting``), so
    that the frontend checks them against oned at every action that touches the cache."""


# ------------------------------------------------------------------------------------------ results


@dataclass(frozen=True)
class Done:
    """A command that answers nothing but its success."""


@dataclass(frozen=True)
class Removed:
    """A disk or VM folder gone; ``awaiting`` as in ``Request.reports_awaiting``."""

    awaiting: tuple[int, ...] = given(whole_list, ())


@dataclass(frozen=True)
class Held:
    """Content the host's node holds: its CID and size in bytes."""

    cid: str = given(text())
    size: int = given(whole(int))


@dataclass(frozen=True)
class Stored:
    """Content the host's node holds for a VM's disk; ``awaiting`` as in ``Request.reports_awaiting``."""

    cid: str = given(text())
    size: int = given(whole(int))
    awaiting: tuple[int, ...] = given(whole_list, ())


@dataclass(frozen=True)
class Deployed:
    """A disk written from IPFS: its content, how it was deployed and the disk file's format."""

    cid: str = given(text())
    mode: str = given(one_of(*MODES))
    format: str = given(one_of(*FORMATS))
    awaiting: tuple[int, ...] = given(whole_list, ())


@dataclass(frozen=True)
class Presence:
    """How much of a CID the host's node holds (``size`` None: content it cannot even describe)."""

    local: bool = given(flag)
    size_local: int = given(whole(int))
    size: int | None = given(optional(whole(int)), None)


@dataclass(frozen=True)
class CacheListing:
    folder: str = given(text())
    total_bytes: int = given(whole(int))
    entries: tuple[Any, ...] = given(anything)


@dataclass(frozen=True)
class Evicted:
    evicted: tuple[str, ...] = given(anything)
    total_bytes: int = given(whole(int))


@dataclass(frozen=True)
class Repository:
    """A Kubo repository as its files say (``error``: none there, or unreadable); never the swarm key, only
    its ``probe.fingerprint``."""

    path: str = given(text())
    exists: bool = given(flag)
    configured_at: float | None = given(optional(number), None)
    """When ``ConfigureRepo`` last changed it."""
    daemon_started_at: float | None = given(optional(number), None)
    error: str | None = given(optional(text()), None)
    peer_id: str | None = given(optional(text()), None)
    api_address: Any = given(anything, None)
    """As Kubo's config has it: a multiaddr, or a list of them."""
    gateway_address: Any = given(anything, None)
    swarm_addresses: tuple[str, ...] = given(texts, ())
    storage_max: str | None = given(optional(text()), None)
    swarm_key: str | None = given(optional(text()), None)
    peers: tuple[Peer, ...] = given(peer_list, ())
    """Whom its node peers with (``Peering.Peers``), every entry that is not a peer left out."""

    @property
    def restart_pending(self) -> bool:
        return restart_pending(self.configured_at, self.daemon_started_at)


@dataclass(frozen=True)
class Daemon:
    """What a Kubo daemon says about itself, or why it did not (``auth``: its secret; ``unasked``: the
    host bundle that holds the client to ask it is missing, another version, or cannot be loaded)."""

    up: bool = given(flag)
    error: str | None = given(optional(text()), None)
    auth: bool = given(flag, False)
    unasked: bool = given(flag, False)
    version: str | None = given(optional(text()), None)
    peer_id: str | None = given(optional(text()), None)
    peers: tuple[str, ...] = given(texts, ())
    repo_size: int | None = given(optional(whole(int)), None)
    storage_max: int | None = given(optional(whole(int)), None)
    api_address: Any = given(anything, None)


@dataclass(frozen=True)
class NodeFacts:
    """Everything doctor judges about a node (``probe.probe``)."""

    time: float = given(number)
    python: str = given(text())
    repo: Repository = given(nested(Repository))
    daemon: Daemon = given(nested(Daemon))
    ipfs_binary: str | None = given(optional(text()), None)
    bundle: str | None = given(optional(text()), None)
    """The digest of the host bundle the node holds (hosts only)."""
    bundle_python: str | None = given(optional(text()), None)
    """Why its python3 cannot import that bundle, or None."""


@dataclass(frozen=True)
class RepoCreated:
    created: bool = given(flag)
    repo: Repository = given(nested(Repository))


@dataclass(frozen=True)
class PeerCreated:
    """An IPFS Cluster peer's ID, and the Kubo repository it sits beside (its addresses: where it listens)."""

    created: bool = given(flag)
    peer_id: str = given(text())
    kubo: Repository = given(nested(Repository))


@dataclass(frozen=True)
class Reconfigured:
    """Whether settings changed, and whether the daemon still runs older ones (or none runs)."""

    changed: bool = given(flag)
    restart_pending: bool = given(flag)


@dataclass(frozen=True)
class Restarted:
    restarted: bool = given(flag)
    reason: str = given(text())


@dataclass(frozen=True)
class UnitInstalled:
    """The systemd unit file, whether it changed, and what became of its daemon."""

    path: str = given(text())
    changed: bool = given(flag)
    done: str = given(text())


# ----------------------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class Fetch(Request[Deployed]):
    """Deploy a disk from IPFS (TM clone/ln); ``size_mb`` grows it, ``monitor_tm`` also marks the system
    datastore for that driver's monitor_ds."""

    command = "fetch"
    result = Deployed
    reports_awaiting = True
    cid: str = given(text(inputs.cid))
    disk: Path = given(text(inputs.disk_path))
    mode: str = given(one_of(*MODES), "copy")
    format: str | None = given(optional(one_of(*FORMATS)), None)
    """The format of the content's bytes (None: from its header)."""
    disk_format: str | None = given(optional(one_of(*FORMATS)), None)
    """The disk's DRIVER, which the disk file must be (None: the content's format; qcow2 overlays)."""
    size_mb: int = given(whole(inputs.size_mb), 0)
    monitor_tm: str | None = given(optional(text(inputs.tm_name)), None)
    vm: int | None = given(optional(whole(inputs.identifier)), None)
    node: Node = given(nested(Node), Node())
    timeout: float = given(seconds, TRANSFER_TIMEOUT)
    stall_timeout: float = given(seconds, STALL_TIMEOUT)
    cache: Cache = given(nested(Cache), Cache())


@dataclass(frozen=True)
class Prefetch(Request[Stored]):
    """Hold a disk's content before the disk moves here (TM mv of an overlay)."""

    command = "prefetch"
    result = Stored
    reports_awaiting = True
    cid: str = given(text(inputs.cid))
    disk: Path = given(text(inputs.disk_path))
    mode: str = given(one_of(*MODES), "copy")
    format: str | None = given(optional(one_of(*FORMATS)), None)
    vm: int | None = given(optional(whole(inputs.identifier)), None)
    node: Node = given(nested(Node), Node())
    timeout: float = given(seconds, TRANSFER_TIMEOUT)
    stall_timeout: float = given(seconds, STALL_TIMEOUT)
    cache: Cache = given(nested(Cache), Cache())


@dataclass(frozen=True)
class Warm(Request[Held]):
    """Hold an image's content in the host cache before deploys need it (``one-ipfs prefetch``)."""

    command = "warm"
    result = Held
    cid: str = given(text(inputs.cid))
    node: Node = given(nested(Node), Node())
    timeout: float = given(seconds, TRANSFER_TIMEOUT)
    stall_timeout: float = given(seconds, STALL_TIMEOUT)
    cache: Cache = given(nested(Cache), Cache())


@dataclass(frozen=True)
class Save(Request[Stored]):
    """Add a disk (or ``disk.<n>.snap/<id>``) to the host's node as the image's FORMAT (TM mvds/cpds)."""

    command = "save"
    result = Stored
    reports_awaiting = True
    disk: Path = given(text(inputs.disk_path))
    format: str = given(one_of(*FORMATS))
    disk_format: str | None = given(optional(one_of(*FORMATS)), None)
    """The disk's DRIVER: what the file is where no deploy here recorded it (a live migration's)."""
    settings: ImportSettings = given(import_settings, ImportSettings())
    vm: int | None = given(optional(whole(inputs.identifier)), None)
    node: Node = given(nested(Node), Node())
    timeout: float = given(seconds, TRANSFER_TIMEOUT)
    cache: Cache = given(nested(Cache), Cache())


@dataclass(frozen=True)
class DeleteDisk(Request[Removed]):
    """Remove a disk (TM delete)."""

    command = "delete-disk"
    result = Removed
    reports_awaiting = True
    disk: Path = given(text(inputs.disk_path))
    vm: int | None = given(optional(whole(inputs.identifier)), None)
    node: Node = given(nested(Node), Node())
    timeout: float = given(seconds, HOUSEKEEPING_TIMEOUT)
    cache: Cache = given(nested(Cache), Cache())


@dataclass(frozen=True)
class DeleteFolder(Request[Removed]):
    """Remove a VM folder (TM delete of ``<datastore>/<vm>``)."""

    command = "delete-folder"
    result = Removed
    reports_awaiting = True
    dir: Path = given(text(inputs.vm_folder))
    node: Node = given(nested(Node), Node())
    timeout: float = given(seconds, HOUSEKEEPING_TIMEOUT)
    cache: Cache = given(nested(Cache), Cache())


@dataclass(frozen=True)
class Release(Request[Done]):
    """Drop the cache uses of a VM that left."""

    command = "release"
    result = Done
    vm: int = given(whole(inputs.identifier))
    node: Node = given(nested(Node), Node())
    timeout: float = given(seconds, HOUSEKEEPING_TIMEOUT)
    cache: Cache = given(nested(Cache), Cache())


@dataclass(frozen=True)
class Has(Request[Presence]):
    """How much of a CID the host's node holds."""

    command = "has"
    result = Presence
    cid: str = given(text(inputs.cid))
    node: Node = given(nested(Node), Node())
    timeout: float = given(seconds, PRESENCE_TIMEOUT)


@dataclass(frozen=True)
class SnapshotCreate(Request[Done]):
    """Copy a disk to ``disk.<n>.snap/<id>``."""

    command = "snapshot-create"
    result = Done
    disk: Path = given(text(inputs.disk_path))
    snap_id: int = given(whole(inputs.identifier))


@dataclass(frozen=True)
class SnapshotRevert(SnapshotCreate):
    """Copy a snapshot back over its disk."""

    command = "snapshot-revert"


@dataclass(frozen=True)
class SnapshotDelete(SnapshotCreate):
    """Remove a disk snapshot."""

    command = "snapshot-delete"


@dataclass(frozen=True)
class SnapshotCreateLive(Request[Done]):
    """Have the hypervisor copy a running VM's disk to ``disk.<n>.snap/<id>``."""

    command = "snapshot-create-live"
    result = Done
    disk: Path = given(text(inputs.disk_path))
    snap_id: int = given(whole(inputs.identifier))
    domain: str = given(text(inputs.domain_name))
    """The VM's DEPLOY_ID."""
    libvirt_uri: str = given(text(inputs.libvirt_uri))
    """kvmrc's LIBVIRT_URI."""
    timeout: float = given(seconds, TRANSFER_TIMEOUT)


@dataclass(frozen=True)
class Resize(Request[Done]):
    """Grow a disk; ``format`` for disks this driver did not deploy."""

    command = "resize"
    result = Done
    disk: Path = given(text(inputs.disk_path))
    size_mb: int = given(whole(inputs.positive_size_mb))
    format: str | None = given(optional(one_of(*FORMATS)), None)
    timeout: float = given(seconds, HOUSEKEEPING_TIMEOUT)


@dataclass(frozen=True)
class MonitorMarker(Request[Done]):
    """Enable host monitoring of a system datastore by ``tm``'s monitor_ds."""

    command = "monitor-marker"
    result = Done
    dir: Path = given(text(inputs.vm_folder))
    tm: str = given(text(inputs.tm_name), "ssh")


@dataclass(frozen=True)
class CacheStatus(Request[CacheListing]):
    command = "cache-status"
    result = CacheListing
    cache: Cache = given(nested(Cache), Cache())


@dataclass(frozen=True)
class CacheEvict(Request[Evicted]):
    """Trim the host cache to ``keep_mb`` now."""

    command = "cache-evict"
    result = Evicted
    keep_mb: int = given(whole(inputs.cache_mb))
    node: Node = given(nested(Node), Node())
    timeout: float = given(seconds, HOUSEKEEPING_TIMEOUT)
    cache: Cache = given(nested(Cache), Cache())


@dataclass(frozen=True)
class BackupAdd(Request[Held]):
    """Add a VM folder's ``backup/`` files as one IPFS directory, pinned as ``token`` (backup datastore)."""

    command = "backup-add"
    result = Held
    dir: Path = given(text(inputs.vm_folder))
    token: str = given(text(backups.token))
    settings: ImportSettings = given(import_settings, ImportSettings())
    node: Node = given(nested(Node), Node())
    timeout: float = given(seconds, TRANSFER_TIMEOUT)
    cache: Cache = given(nested(Cache), Cache())


@dataclass(frozen=True)
class BackupRelease(Request[Done]):
    """Drop this host's pin of a backup the frontend holds."""

    command = "backup-release"
    result = Done
    token: str = given(text(backups.token))
    node: Node = given(nested(Node), Node())
    timeout: float = given(seconds, HOUSEKEEPING_TIMEOUT)


@dataclass(frozen=True)
class Probe(Request[NodeFacts]):
    """A node's facts (``one-ipfs doctor``): ``lib`` (hosts) the host bundle's folder, ``frontend_bundle``
    the frontend's bundle digest; the daemon is asked only when the host holds that one. The one command that
    runs without the host bundle (``hosts.calls``)."""

    command = "probe"
    result = NodeFacts
    repo: str = given(text())
    api: str = given(text())
    auth_file: str = given(text(), "")
    auth_setting: str = given(text(), "")
    lib: str | None = given(optional(text()), None)
    frontend_bundle: str | None = given(optional(text()), None)


@dataclass(frozen=True)
class InitRepo(Request[RepoCreated]):
    """Create the Kubo repository when there is none (``one-ipfs network``)."""

    command = "init-repo"
    result = RepoCreated
    repo: str = given(text())


@dataclass(frozen=True)
class ConfigureRepo(Request[Reconfigured]):
    """Make the repository a member of the private network: its swarm key (``swarm_key``, the network's own,
    never logged) and its listening and peering settings; a change leaves a restart pending."""

    command = "configure-repo"
    result = Reconfigured
    repo: str = given(text())
    swarm_key: str = given(text())
    node: NodeSettings = given(node_settings)


@dataclass(frozen=True)
class RestartDaemon(Request[Restarted]):
    """Restart the Kubo daemon through the systemd ``unit`` that runs it, if one does."""

    command = "restart-daemon"
    result = Restarted
    unit: str = given(text(inputs.unit_name))


@dataclass(frozen=True)
class InstallUnit(Request[UnitInstalled]):
    """Install the systemd ``unit`` that runs the node's ``daemon`` in ``folder`` (Kubo: its repository;
    the IPFS Cluster peer: its folder, started after the unit ``after``), and have it run the current
    settings (``restart``: a running daemon runs older ones)."""

    command = "install-unit"
    result = UnitInstalled
    unit: str = given(text(inputs.unit_name))
    daemon: str = given(one_of(*DAEMONS))
    folder: str = given(text())
    after: str | None = given(optional(text(inputs.unit_name)), None)
    restart: bool = given(flag, False)


@dataclass(frozen=True)
class InitPeer(Request[PeerCreated]):
    """Create the IPFS Cluster peer in ``folder`` when there is none; ``repo`` is the Kubo repository it sits
    beside, whose swarm addresses tell where the peer may listen."""

    command = "init-peer"
    result = PeerCreated
    folder: str = given(text())
    repo: str = given(text())


@dataclass(frozen=True)
class ConfigurePeer(Request[Reconfigured]):
    """Make the peer a member of the cluster (``secret``: the cluster's)."""

    command = "configure-peer"
    result = Reconfigured
    folder: str = given(text())
    secret: str = given(text())
    peer: PeerSettings = given(peer_settings)


REQUESTS: dict[str, type[Request[Any]]] = {
    kind.command: kind
    for kind in (
        Fetch,
        Prefetch,
        Warm,
        Save,
        DeleteDisk,
        DeleteFolder,
        Release,
        Has,
        SnapshotCreate,
        SnapshotCreateLive,
        SnapshotRevert,
        SnapshotDelete,
        Resize,
        MonitorMarker,
        CacheStatus,
        CacheEvict,
        BackupAdd,
        BackupRelease,
        Probe,
        InitRepo,
        ConfigureRepo,
        RestartDaemon,
        InstallUnit,
        InitPeer,
        ConfigurePeer,
    )
}


# ------------------------------------------------------------------------------------------- JSON


def to_json(value: Any) -> str:
    """A request (with its ``command``) or a result as one JSON line."""
    fields = _plain(value)
    if isinstance(value, Request):
        fields = {"command": value.command, **fields}
    return json.dumps(fields, sort_keys=True)


def read_request(line: str) -> Request[Any]:
    """The request a JSON object names by its ``command``, every field checked."""
    data = _object(line, "the request")
    command = data.pop("command", None)
    if not isinstance(command, str) or command not in REQUESTS:
        shown = command[:40] if isinstance(command, str) else _kind(command)
        raise InvalidInput(f"unknown host command {shown!r}")
    return from_fields(REQUESTS[command], data, command)


def read_result(request: Request[R], line: str) -> R:
    """The answer to ``request`` from the JSON line the host printed."""
    return from_fields(request.result, _object(line, f"the result of {request.command}"), request.command)  # type: ignore[no-any-return]


def from_fields(kind: type[T], data: Any, where: str) -> T:
    """``kind`` from a JSON object: every field through its reader, none unknown, each required one given."""
    readers = {item.name: item.metadata["read"] for item in dataclasses.fields(kind)}  # type: ignore[arg-type]
    required = {
        item.name
        for item in dataclasses.fields(kind)  # type: ignore[arg-type]
        if item.default is dataclasses.MISSING and item.default_factory is dataclasses.MISSING
    }
    return kind(**_read_object(readers, required, data, where))


def _read_object(readers: dict[str, Reader], required: set[str], data: Any, where: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise InvalidInput(f"{where} must be a JSON object, not {_kind(data)}")
    unknown = sorted(str(key)[:40] for key in data if key not in readers)
    if unknown:
        raise InvalidInput(f"{where}: unknown field {unknown[0]!r}")
    missing = sorted(required - data.keys())
    if missing:
        raise InvalidInput(f"{where}: {missing[0]} is required")
    return {name: readers[name](value, f"{where}: {name}") for name, value in data.items()}


def _list(value: Any, name: str) -> list[Any]:
    if not isinstance(value, list):
        raise InvalidInput(f"{name} must be a list, not {_kind(value)}")
    return value


def _object(line: str, what: str) -> dict[str, Any]:
    if len(line) > MAX_REQUEST:
        raise InvalidInput(f"{what} is larger than {MAX_REQUEST} bytes")
    try:
        data = json.loads(line)
    except ValueError:
        raise InvalidInput(f"{what} is not JSON") from None
    if not isinstance(data, dict):
        raise InvalidInput(f"{what} must be a JSON object, not {_kind(data)}")
    return data


def _plain(value: Any) -> Any:
    """JSON's types for a dataclass's fields: paths as strings, nested dataclasses as objects."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {item.name: _plain(getattr(value, item.name)) for item in dataclasses.fields(value)}
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "true or false"}.get(
        type(value), "null" if value is None else "a number"
    )
