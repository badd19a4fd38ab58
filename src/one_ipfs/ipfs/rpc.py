"""The one client of Kubo's RPC API (``/api/v0``) that the frontend and every host use.

Standard library only, because hosts run it with whatever python3 they have. Each method turns a command
into a ``Call`` for its transport (``ipfs/transport.py``: HTTP to the node, or a fake node in tests) and
reads the answer into the types below.
"""

from __future__ import annotations

import base64
import os
import urllib.parse
from collections.abc import Callable, Generator, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from typing import Any, BinaryIO

from one_ipfs import defaults
from one_ipfs.errors import (
    CommandFailed,
    ContentNotFound,
    InvalidInput,
    IpfsError,
    IpfsTimeout,
    StorageError,
    StreamBroken,
)
from one_ipfs.ipfs.transport import PIECE, Call, HttpTransport, Response, Transport, Upload

PROVIDER_EVENT = 4
UNSPECIFIED_TO_LOOPBACK = {"0.0.0.0": "127.0.0.1", "::": "::1"}  # noqa: S104 - reached, never bound


@dataclass(frozen=True)
class ImportSettings:
    """How ``add`` cuts and hashes a file: each of these changes the CID, so a datastore fixes them."""

    chunker: str = defaults.CHUNKER
    cid_version: int = defaults.CID_VERSION
    raw_leaves: bool = defaults.RAW_LEAVES
    hash: str = defaults.HASH

    def query(self) -> dict[str, str]:
        return {
            "chunker": self.chunker,
            "cid-version": str(self.cid_version),
            "raw-leaves": _flag(self.raw_leaves),
            "hash": self.hash,
        }


@dataclass(frozen=True)
class AddResult:
    cid: str
    size: int


@dataclass(frozen=True)
class Pin:
    cid: str
    type: str
    name: str


@dataclass(frozen=True)
class DagLink:
    """A link of a dag-pb node; ``size`` is its Tsize: a raw leaf's own length, a subtree's total."""

    cid: str
    size: int


@dataclass(frozen=True)
class FileStat:
    """``size`` is the file's own bytes; ``local``/``size_local`` are known only when asked for."""

    cid: str
    size: int
    cumulative_size: int
    blocks: int
    type: str
    local: bool | None
    size_local: int | None


@dataclass(frozen=True)
class RepoStat:
    """``repo_path`` is empty: Kubo leaves it out of the size-only answer, the only cheap one."""

    repo_size: int
    storage_max: int
    num_objects: int
    repo_path: str


@dataclass(frozen=True)
class DiskSpace:
    free: int
    total: int


@dataclass(frozen=True)
class NodeId:
    peer_id: str
    addresses: list[str]
    agent_version: str


@dataclass(frozen=True)
class PinProgress:
    nodes: int
    bytes: int


class KuboClient:
    """A Kubo node's RPC API at ``api``: ``http://host:port`` or a multiaddr ``/ip4/host/tcp/port``, reached
    over HTTP unless a ``transport`` stands in for the wire."""

    def __init__(
        self,
        api: str = "http://127.0.0.1:5001",
        timeout: float = 60.0,
        auth: str | None = None,
        *,
        transport: Transport | None = None,
    ) -> None:
        self.host, self.port = parse_api(api)
        if timeout <= 0:
            raise InvalidInput(f"the Kubo RPC timeout must be positive, not {timeout}")
        if auth is not None and ("\r" in auth or "\n" in auth):
            raise InvalidInput("the Kubo RPC authorization must be a single line")
        wire = HttpTransport(self.host, self.port, timeout, auth)
        self.address = wire.address
        self._transport = transport or wire

    def add(
        self,
        source: str | os.PathLike[str] | BinaryIO,
        *,
        settings: ImportSettings,
        pin: bool = True,
        pin_name: str | None = None,
        progress: Callable[[int], None] | None = None,
        only_hash: bool = False,
        filename: str = "disk",
        timeout: float | None = None,
    ) -> AddResult:
        """Import a file, streamed in 1 MiB pieces so that a multi-GB image never sits in memory.

        An import lasts as long as the image is big, so without ``timeout`` it has no overall
        deadline; it ends instead when nothing moves (no byte read from ``source`` and no progress
        from Kubo) for the client's timeout. ``progress`` gets the bytes Kubo has taken in so far.
        """
        # Progress events also show the import is alive, so they are asked for even without a callback.
        params = {**settings.query(), "pin": _flag(pin), "progress": "true"}
        if pin and pin_name:
            params["pin-name"] = pin_name
        if only_hash:
            params["only-hash"] = "true"
        if isinstance(source, (str, os.PathLike)):
            try:
                reader: BinaryIO = open(source, "rb")  # noqa: SIM115 - closed below, after the upload thread
            except OSError as exc:
                raise StorageError(
                    f"cannot read {os.fspath(source)} to add it to IPFS: {exc.strerror}"
                ) from exc
        else:
            reader = source
        upload = Upload(reader, filename)
        cid = None
        try:
            with self._open("add", (), params, timeout, upload=upload, stall=True) as response:
                for event in response.events():
                    if "Hash" in event:
                        cid = str(event["Hash"])
                    elif progress is not None and "Bytes" in event:
                        progress(int(event["Bytes"]))
        finally:
            if reader is not source:
                reader.close()
        if cid is None:
            raise StreamBroken(
                f"ipfs add: Kubo at {self.address} finished without naming the CID of {filename}"
            )
        return AddResult(cid, upload.sent)

    def cat(
        self,
        path: str,
        *,
        offset: int = 0,
        length: int | None = None,
        chunk_size: int = PIECE,
        timeout: float | None = None,
    ) -> Generator[bytes, None, None]:
        """The bytes of ``path`` in pieces of ``chunk_size`` (the last may be shorter).

        Closing the generator early closes the connection, which cancels the read in Kubo.
        """
        params = {}
        if offset:
            params["offset"] = str(offset)
        if length is not None:
            params["length"] = str(length)
        with self._open("cat", (path,), params, timeout) as response:
            expected = response.headers.get("x-content-length", "")
            pending = bytearray()
            for piece in response.body():
                pending += piece
                while len(pending) >= chunk_size:
                    yield bytes(pending[:chunk_size])
                    del pending[:chunk_size]
            if pending:
                yield bytes(pending)
            if expected.isdigit() and response.received < int(expected):
                raise response.broken(f"Kubo announced {expected} bytes and closed the stream")

    def pin_add(
        self,
        cid: str,
        *,
        name: str | None = None,
        progress: Callable[[PinProgress], None] | None = None,
        timeout: float | None = None,
    ) -> None:
        """Pin recursively, fetching every missing block; ``progress`` is called about twice a second.

        An exception raised by ``progress`` ends the pin (the connection closes, Kubo cancels).
        """
        params = {"recursive": "true"}
        if name:
            params["name"] = name
        if progress is not None:
            params["progress"] = "true"
        with self._open("pin/add", (cid,), params, timeout) as response:
            for event in response.events():
                if progress is not None and "Pins" not in event:
                    progress(PinProgress(int(event.get("Progress", 0)), int(event.get("Bytes", 0))))

    def pin_rm(self, cid: str) -> None:
        self._call("pin/rm", (cid,), {"recursive": "true"})

    def pin_ls(
        self, cid: str | None = None, *, name: str | None = None, type: str = "recursive"
    ) -> list[Pin]:
        """Pins with their names; a CID that is not pinned gives an empty list."""
        params = {"type": type, "names": "true"}
        if name:
            params["name"] = name
        try:
            answer = self._call("pin/ls", (cid,) if cid else (), params)
        except ContentNotFound:
            if cid:
                return []
            raise
        keys = answer.get("Keys") or {}
        return [Pin(key, str(info.get("Type", "")), str(info.get("Name", ""))) for key, info in keys.items()]

    def dag_links(self, cid: str, *, timeout: float | None = None) -> list[DagLink]:
        """The links of a dag-pb node, in order (fetching that one node, not what it links to)."""
        answer = self._call("dag/get", (cid,), {"output-codec": "dag-json"}, timeout)
        return [
            DagLink(str(link["Hash"]["/"]), int(link.get("Tsize", 0))) for link in answer.get("Links") or []
        ]

    def gateway_address(self) -> tuple[str, int] | None:
        """``(host, port)`` where this machine reaches the node's HTTP gateway, if it serves one over TCP."""
        bound = self.gateway_bound()
        return None if bound is None else (UNSPECIFIED_TO_LOOPBACK.get(bound[0], bound[0]), bound[1])

    def gateway_bound(self) -> tuple[str, int] | None:
        """``(host, port)`` the node's HTTP gateway is bound to (``Addresses.Gateway``), maybe ``0.0.0.0``."""
        value = self.config_value("Addresses.Gateway")
        for address in value if isinstance(value, list) else [value]:
            try:
                return parse_api(str(address))
            except InvalidInput:
                continue
        return None

    def config_value(self, key: str) -> Any:
        """The node's setting ``key`` (``Addresses.API``) as its configuration holds it."""
        return self._call("config", (key,), {}).get("Value")

    def block_get(self, cid: str, *, timeout: float | None = None) -> bytes:
        """One block's bytes; a block the node lacks is fetched from its peers first."""
        with self._open("block/get", (cid,), {}, timeout) as response:
            return b"".join(response.body())

    def block_stat(self, cid: str, *, offline: bool = False, timeout: float | None = None) -> int:
        """Size of one block; a block the node lacks is fetched from its peers first, or with ``offline``
        is ContentNotFound."""
        params = {"offline": "true"} if offline else {}
        return int(self._call("block/stat", (cid,), params, timeout).get("Size", 0))

    def block_put(self, data: bytes, *, timeout: float | None = None) -> str:
        """Store one raw block (CIDv1, sha2-256) and return its CID."""
        upload = Upload(data, "block")
        with self._open("block/put", (), {}, timeout, upload=upload) as response:
            for event in response.events():
                if "Key" in event:
                    return str(event["Key"])
        raise StreamBroken(f"ipfs block put: Kubo at {self.address} finished without naming the CID")

    def p2p_listen(self, protocol: str, target: str) -> None:
        """Forward libp2p streams of ``protocol`` from the node's peers to ``target``; a listener that is
        already there is left as it is."""
        try:
            self._call("p2p/listen", (protocol, target), {})
        except CommandFailed as exc:
            if "already registered" not in str(exc):
                raise

    def files_stat(
        self, path: str, *, with_local: bool = False, offline: bool = False, timeout: float | None = None
    ) -> FileStat:
        """Size and shape of ``/ipfs/<cid>`` from its root block only; ``with_local`` adds what is local,
        and ``offline`` asks this node's own blocks (ContentNotFound, never a fetch, for a missing root)."""
        params = {"with-local": "true"} if with_local else {}
        if offline:
            params["offline"] = "true"
        answer = self._call("files/stat", (path,), params, timeout)
        local = bool(answer.get("Local", False)) if with_local else None  # Kubo leaves out false and 0
        size_local = int(answer.get("SizeLocal", 0)) if with_local else None
        return FileStat(
            cid=str(answer["Hash"]),
            size=int(answer.get("Size", 0)),
            cumulative_size=int(answer.get("CumulativeSize", 0)),
            blocks=int(answer.get("Blocks", 0)),
            type=str(answer.get("Type", "")),
            local=local,
            size_local=size_local,
        )

    def files_cp(self, source: str, destination: str) -> None:
        """Copy into MFS (parents created): an entry there keeps content from GC without a pin."""
        self._call("files/cp", (source, destination), {"parents": "true"})

    def files_rm(self, path: str, *, force: bool = False) -> None:
        """Remove from MFS; ``force`` removes directories too and accepts a path that is already gone."""
        self._call("files/rm", (path,), {"force": "true", "recursive": "true"} if force else {})

    def files_ls(self, path: str) -> list[tuple[str, str]]:
        """``(name, cid)`` of each entry of an MFS directory."""
        answer = self._call("files/ls", (path,), {"long": "true"})
        return [(str(entry["Name"]), str(entry.get("Hash", ""))) for entry in answer.get("Entries") or []]

    def repo_stat(self) -> RepoStat:
        """Always ``size-only``: the full answer walks every block of the repository."""
        answer = self._call("repo/stat", (), {"size-only": "true"})
        return RepoStat(
            repo_size=int(answer.get("RepoSize", 0)),
            storage_max=int(answer.get("StorageMax", 0)),
            num_objects=int(answer.get("NumObjects", 0)),
            repo_path=str(answer.get("RepoPath", "")),
        )

    def repo_disk(self) -> DiskSpace:
        """Space on the filesystem that holds the repository, as the node itself sees it."""
        info = self._call("diag/sys", (), {}).get("diskinfo") or {}
        return DiskSpace(free=int(info.get("free_space", 0)), total=int(info.get("total_space", 0)))

    def repo_gc(self, *, timeout: float | None = None) -> None:
        with self._open("repo/gc", (), {}, timeout) as response:
            for _ in response.events():
                pass

    def name_resolve(self, name: str, *, timeout: float | None = None) -> str:
        """``/ipns/<name>`` (or a bare name) to the ``/ipfs/<cid>[/...]`` path it points at now."""
        return str(self._call("name/resolve", (name,), {"recursive": "true"}, timeout)["Path"])

    def name_publish(
        self, path: str, *, key: str = "self", lifetime: str = "24h", allow_offline: bool = True
    ) -> str:
        params = {"key": key, "lifetime": lifetime, "allow-offline": _flag(allow_offline)}
        return str(self._call("name/publish", (path,), params)["Name"])

    def id(self) -> NodeId:
        answer = self._call("id", (), {})
        return NodeId(
            str(answer["ID"]), [str(a) for a in answer.get("Addresses") or []], str(answer["AgentVersion"])
        )

    def version(self) -> str:
        return str(self._call("version", (), {})["Version"])

    def swarm_peers(self) -> list[tuple[str, str]]:
        """``(peer_id, multiaddr)`` of every open connection."""
        answer = self._call("swarm/peers", (), {})
        return [(str(peer["Peer"]), str(peer["Addr"])) for peer in answer.get("Peers") or []]

    def swarm_connect(self, *addresses: str, timeout: float | None = None) -> None:
        """Dial a peer at its ``addresses`` (``.../p2p/<peer>``; Kubo tries those of one peer together)."""
        self._call("swarm/connect", addresses, {}, timeout)

    def swarm_disconnect(self, peer: str) -> None:
        """Close every connection to ``peer`` (a peer ID)."""
        self._call("swarm/disconnect", (f"/p2p/{peer}",), {})

    def bitswap_blocks_moved(self) -> tuple[int, int]:
        """Blocks bitswap received and sent since the daemon started."""
        answer = self._call("bitswap/stat", (), {})
        return int(answer.get("BlocksReceived", 0)), int(answer.get("BlocksSent", 0))

    def peering_peers(self) -> list[tuple[str, list[str]]]:
        """``(peer_id, addresses)`` of every peer the node keeps connected (``Peering.Peers``)."""
        answer = self._call("swarm/peering/ls", (), {})
        return [
            (str(peer["ID"]), [str(address) for address in peer.get("Addrs") or []])
            for peer in answer.get("Peers") or []
        ]

    def pubsub_publish(self, topic: str, data: bytes, *, timeout: float | None = None) -> None:
        """Send ``data`` to the nodes subscribed to ``topic``: members of the private network only."""
        upload = Upload(data, "data")
        with self._open("pubsub/pub", (_multibase(topic),), {}, timeout, upload=upload) as response:
            for _ in response.events():
                pass

    def pubsub_subscribe(self, topic: str, *, timeout: float) -> Subscription:
        """Listen on ``topic`` for at most ``timeout`` seconds (or until the subscription is closed)."""
        return Subscription(self._ask(Call("pubsub/sub", (_multibase(topic),), {}, timeout)))

    def routing_findprovs(
        self, cid: str, *, num_providers: int = 20, timeout: float | None = None
    ) -> list[str]:
        """Peer IDs that provide ``cid``; a search that runs out of time returns what it found."""
        providers: list[str] = []
        try:
            with self._open(
                "routing/findprovs", (cid,), {"num-providers": str(num_providers)}, timeout
            ) as response:
                for event in response.events():
                    if event.get("Type") == PROVIDER_EVENT:
                        providers.extend(
                            str(r["ID"]) for r in event.get("Responses") or [] if r["ID"] not in providers
                        )
        except IpfsTimeout:
            pass
        return providers

    def _call(
        self, endpoint: str, args: Sequence[str], params: dict[str, str], timeout: float | None = None
    ) -> dict[str, Any]:
        """A command that answers with one JSON object (or none)."""
        answer: dict[str, Any] = {}
        with self._open(endpoint, args, params, timeout) as response:
            for event in response.events():
                answer = event
        return answer

    def _open(
        self,
        endpoint: str,
        args: Sequence[str],
        params: dict[str, str],
        timeout: float | None,
        *,
        upload: Upload | None = None,
        stall: bool = False,
    ) -> closing[Response]:
        """A command's answer, closed (the command cancelled in Kubo) when the ``with`` block ends."""
        return closing(self._ask(Call(endpoint, tuple(args), params, timeout, upload, stall)))

    def _ask(self, call: Call) -> Response:
        if call.timeout is not None and call.timeout <= 0:
            raise InvalidInput(f"ipfs {call.endpoint}: a timeout must be positive, not {call.timeout}")
        return self._transport(call)


class Subscription:
    """A pubsub subscription: each message, with its sender's peer ID, as it comes, until closed.

    ``close`` may be called from another thread than the one reading ``messages``: it ends the read.
    """

    def __init__(self, response: Response) -> None:
        self._response = response
        self._closing = False

    def messages(self) -> Iterator[tuple[str, bytes]]:
        """``(sender, data)`` of each message; malformed ones are left out."""
        try:
            for message in self._response.events():
                sender, data = message.get("from"), message.get("data")
                if isinstance(sender, str) and sender and isinstance(data, str) and data.startswith("u"):
                    try:
                        yield sender, base64.urlsafe_b64decode(data[1:] + "=" * (-len(data[1:]) % 4))
                    except ValueError:
                        continue
        except IpfsError:
            if not self._closing:
                raise
        finally:
            self._response.close()

    def close(self) -> None:
        """Wake the reader (its answer is interrupted under it); it closes the answer as it leaves."""
        self._closing = True
        self._response.interrupt()


def authorization(secret: str) -> str:
    """The ``Authorization`` header value Kubo expects for an ``API.Authorizations`` AuthSecret.

    The secret is written as in Kubo's configuration: ``bearer:<token>``, ``basic:<user>:<password>``,
    ``basic:<base64 of user:password>``, or a bare token (a bearer token).
    """
    kind, _, value = secret.partition(":")
    if kind == "basic" and value:
        return "Basic " + (base64.b64encode(value.encode()).decode() if ":" in value else value)
    if kind == "bearer" and value:
        return "Bearer " + value
    return "Bearer " + secret


def authorization_from_file(path: str, setting: str) -> str:
    """The ``Authorization`` header for the AuthSecret kept in ``path``, named by ``setting``.

    Secrets live in a file only the drivers' account reads, never in an argument, a template or a log;
    so no message here quotes the file's content.
    """
    try:
        with open(path, "rb") as file:
            data = file.read(4097)
    except OSError as exc:
        raise StorageError(
            f"{setting}: cannot read the Kubo RPC secret file {path[:200]}: {exc.strerror or exc}"
        ) from None
    lines = [line.strip() for line in data.decode("utf-8", "replace").splitlines() if line.strip()]
    if len(data) > 4096 or len(lines) != 1 or not lines[0].isprintable():
        raise InvalidInput(
            f"{setting}: {path[:200]} must hold one line, the secret of the node's API.Authorizations "
            "(bearer:<token> or basic:<user>:<password>)"
        )
    return authorization(lines[0])


def parse_api(api: str, service: str = "Kubo RPC") -> tuple[str, int]:
    """``http://host:port`` or ``/ip4|ip6|dns|dns4|dns6/host/tcp/port`` to ``(host, port)``: how Kubo and
    IPFS Cluster both name their APIs."""
    problem = InvalidInput(f"not a {service} address (http://host:port or /ip4/host/tcp/port): {api[:80]!r}")
    if api.startswith("/"):
        parts = api.split("/")
        if len(parts) < 5 or parts[1] not in ("ip4", "ip6", "dns", "dns4", "dns6") or parts[3] != "tcp":
            raise problem
        if parts[5:] not in ([], ["http"], [""]):
            raise problem
        host, port_text = parts[2], parts[4]
    else:
        url = urllib.parse.urlsplit(api)
        if url.scheme != "http" or not url.hostname or url.path not in ("", "/") or url.query or url.username:
            raise problem
        host = url.hostname
        try:
            port_text = str(url.port or 80)
        except ValueError:
            raise problem from None
    if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise problem
    return host, int(port_text)


def _multibase(text: str) -> str:
    """A pubsub topic as Kubo's RPC API takes it: multibase base64url (``u``) without padding."""
    return "u" + base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _flag(value: bool) -> str:
    return "true" if value else "false"
