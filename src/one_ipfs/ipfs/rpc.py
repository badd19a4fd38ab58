"""The one client of Kubo's RPC API (``/api/v0``) that the frontend and every host use.

Standard library only, because hosts run it with whatever python3 they have. It speaks HTTP/1.1
on a socket of its own rather than through ``http.client``: Kubo reports an error that happens
after a stream has started in the HTTP trailer ``X-Stream-Error``, which ``http.client`` throws
away, and an import must upload and read progress at the same time.

Every call is bounded. A call ends by its deadline (the per-call ``timeout``, else the client's);
when a call gives its own timeout Kubo gets it too (``timeout=``), so Kubo stops working when the
client stops waiting. Closing a connection cancels the command in Kubo.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import selectors
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, BinaryIO

from one_ipfs.errors import (
    CommandFailed,
    ContentNotFound,
    DaemonUnreachable,
    InvalidInput,
    IpfsError,
    IpfsTimeout,
    StorageError,
    StreamBroken,
)

PIECE = 1 << 20
KUBO_FIRST = 2.0
"""Seconds the client waits beyond a timeout it gave Kubo, so that Kubo's own answer arrives first."""
DEADLINE_MESSAGE = "context deadline exceeded"
NOT_FOUND_MESSAGES = ("not pinned", "no link named", "not found", "could not resolve name", "does not exist")
PROVIDER_EVENT = 4
MAX_LINE = 64 << 20
MAX_ERROR_BODY = 1 << 16
MAX_CHUNK_LINE = 1024
UNSPECIFIED_TO_LOOPBACK = {"0.0.0.0": "127.0.0.1", "::": "::1"}  # noqa: S104 - reached, never bound


@dataclass(frozen=True)
class ImportSettings:
    """How ``add`` cuts and hashes a file: each of these changes the CID, so a datastore fixes them."""

    chunker: str = "size-1048576"
    cid_version: int = 1
    raw_leaves: bool = True
    hash: str = "sha2-256"

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
    """A Kubo node's RPC API at ``api``: ``http://host:port`` or a multiaddr ``/ip4/host/tcp/port``."""

    def __init__(
        self, api: str = "http://127.0.0.1:5001", timeout: float = 60.0, auth: str | None = None
    ) -> None:
        self.host, self.port = parse_api(api)
        self.address = f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"
        if timeout <= 0:
            raise InvalidInput(f"the Kubo RPC timeout must be positive, not {timeout}")
        if auth is not None and ("\r" in auth or "\n" in auth):
            raise InvalidInput("the Kubo RPC authorization must be a single line")
        self.timeout = timeout
        self.auth = auth

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
        upload = _Upload(reader, filename)
        clock = _Clock(timeout, 0, KUBO_FIRST) if timeout else _Clock(0, self.timeout, 0)
        cid = None
        try:
            with self._open("add", (), params, timeout, clock=clock, upload=upload) as exchange:
                for event in exchange.events():
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
        with self._open("cat", (path,), params, timeout) as exchange:
            expected = exchange.headers.get("x-content-length", "")
            pending = bytearray()
            for piece in exchange.body():
                pending += piece
                while len(pending) >= chunk_size:
                    yield bytes(pending[:chunk_size])
                    del pending[:chunk_size]
            if pending:
                yield bytes(pending)
            if expected.isdigit() and exchange.received < int(expected):
                raise exchange.broken(f"Kubo announced {expected} bytes and closed the stream")

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
        with self._open("pin/add", (cid,), params, timeout) as exchange:
            for event in exchange.events():
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
        value = self._call("config", ("Addresses.Gateway",), {}).get("Value")
        for address in value if isinstance(value, list) else [value]:
            try:
                return parse_api(str(address))
            except InvalidInput:
                continue
        return None

    def block_get(self, cid: str, *, timeout: float | None = None) -> bytes:
        """One block's bytes; a block the node lacks is fetched from its peers first."""
        with self._open("block/get", (cid,), {}, timeout) as exchange:
            return b"".join(exchange.body())

    def block_stat(self, cid: str, *, timeout: float | None = None) -> int:
        """Size of one block; a block the node lacks is fetched from its peers first."""
        return int(self._call("block/stat", (cid,), {}, timeout).get("Size", 0))

    def block_put(self, data: bytes, *, timeout: float | None = None) -> str:
        """Store one raw block (CIDv1, sha2-256) and return its CID."""
        upload = _Upload(data, "block")
        with self._open("block/put", (), {}, timeout, upload=upload) as exchange:
            for event in exchange.events():
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

    def files_stat(self, path: str, *, with_local: bool = False, timeout: float | None = None) -> FileStat:
        """Size and shape of ``/ipfs/<cid>`` from its root block only; ``with_local`` adds what is local."""
        params = {"with-local": "true"} if with_local else {}
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
        """Copy into MFS (parents created): a reference that keeps content from GC without a pin."""
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
        with self._open("repo/gc", (), {}, timeout) as exchange:
            for _ in exchange.events():
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
        upload = _Upload(data, "data")
        with self._open("pubsub/pub", (_multibase(topic),), {}, timeout, upload=upload) as exchange:
            for _ in exchange.events():
                pass

    def pubsub_subscribe(self, topic: str, *, timeout: float) -> Subscription:
        """Listen on ``topic`` for at most ``timeout`` seconds (or until the subscription is closed)."""
        return Subscription(self._open("pubsub/sub", (_multibase(topic),), {}, timeout))

    def routing_findprovs(
        self, cid: str, *, num_providers: int = 20, timeout: float | None = None
    ) -> list[str]:
        """Peer IDs that provide ``cid``; a search that runs out of time returns what it found."""
        providers: list[str] = []
        try:
            with self._open(
                "routing/findprovs", (cid,), {"num-providers": str(num_providers)}, timeout
            ) as exchange:
                for event in exchange.events():
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
        with self._open(endpoint, args, params, timeout) as exchange:
            for event in exchange.events():
                answer = event
        return answer

    def _open(
        self,
        endpoint: str,
        args: Sequence[str],
        params: dict[str, str],
        timeout: float | None,
        *,
        clock: _Clock | None = None,
        upload: _Upload | None = None,
    ) -> _Exchange:
        query = [("arg", arg) for arg in args] + list(params.items())
        if timeout is not None:
            if timeout <= 0:
                raise InvalidInput(f"ipfs {endpoint}: a timeout must be positive, not {timeout}")
            query.append(("timeout", f"{max(int(timeout * 1000), 1)}ms"))
        label = " ".join([endpoint.replace("/", " "), *(arg[:120] for arg in args[:1])])
        if clock is None:
            clock = _Clock(timeout, 0, KUBO_FIRST) if timeout else _Clock(self.timeout, 0, 0)
        exchange = _Exchange(self, label, clock)
        exchange.start(
            f"/api/v0/{endpoint}?{urllib.parse.urlencode(query, quote_via=urllib.parse.quote)}", upload
        )
        return exchange


class Subscription:
    """A pubsub subscription: each message, with its sender's peer ID, as it comes, until closed.

    ``close`` may be called from another thread than the one reading ``messages``: it ends the read.
    """

    def __init__(self, exchange: _Exchange) -> None:
        self._exchange = exchange
        self._closing = False

    def messages(self) -> Iterator[tuple[str, bytes]]:
        """``(sender, data)`` of each message; malformed ones are left out."""
        try:
            for message in self._exchange.events():
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
            self._exchange.close()

    def close(self) -> None:
        """Wake the reader (the connection shuts down under it); it closes the exchange as it leaves."""
        self._closing = True
        sock = self._exchange.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class _Clock:
    """When a call must end: by a deadline, or (for an import) after a time with nothing moving."""

    def __init__(self, deadline: float, stall: float, grace: float) -> None:
        self.limit = deadline
        self.stall = stall
        self.grace = grace
        self.started = self.last = time.monotonic()

    def touch(self) -> None:
        self.last = time.monotonic()

    def remaining(self) -> float:
        now = time.monotonic()
        if self.stall:
            return self.last + self.stall - now
        return self.started + self.limit + self.grace - now


class _Upload:
    """A file sent as one multipart part: a stream in HTTP chunks of at most 1 MiB, read beside the
    response (``add`` answers with progress while the file still arrives), or bytes in hand sent whole."""

    def __init__(self, reader: BinaryIO | bytes, filename: str) -> None:
        self.reader = reader
        self.boundary = os.urandom(16).hex()
        self.filename = urllib.parse.quote(filename, safe="")
        self.sent = 0
        self.error: BaseException | None = None

    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def whole(self) -> bytes | None:
        """The entire body, when the bytes are in hand: sent with a Content-Length, by the caller itself."""
        if not isinstance(self.reader, bytes):
            return None
        self.sent = len(self.reader)
        return b"".join((self._part_head(), self.reader, self._tail()))

    def pieces(self, clock: _Clock) -> Iterator[bytes]:
        assert not isinstance(self.reader, bytes)
        yield self._part_head()
        while True:
            data = self.reader.read(PIECE)
            if not data:
                break
            clock.touch()
            self.sent += len(data)
            yield data
        yield self._tail()

    def _part_head(self) -> bytes:
        return (
            f"--{self.boundary}\r\n"
            f'Content-Disposition: form-data; name="file"; filename="{self.filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()

    def _tail(self) -> bytes:
        return f"\r\n--{self.boundary}--\r\n".encode()


class _Exchange:
    """One request and its response on a connection of their own (``Connection: close``)."""

    def __init__(self, client: KuboClient, label: str, clock: _Clock) -> None:
        self.client = client
        self.label = label
        self.clock = clock
        self.sock: socket.socket | None = None
        self.selector = selectors.DefaultSelector()
        self.buffer = bytearray()
        self.answered = False
        self.upload: _Upload | None = None
        self.sender: threading.Thread | None = None
        self.status = 0
        self.headers: dict[str, str] = {}
        self.received = 0

    def __enter__(self) -> _Exchange:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def start(self, target: str, upload: _Upload | None) -> None:
        """Send the request and read the response head; an error answer is raised here."""
        try:
            self._connect()
            self._send_head(target, upload)
            self._read_head()
        except BaseException:
            self.close()
            raise
        if self.status != 200:
            try:
                raise self._answer_error()
            finally:
                self.close()

    def close(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)
            self.sock.close()
        self.selector.close()
        if self.sender is not None:
            self.sender.join(1)  # it stops at once unless the source blocks; then it stops when that returns

    def body(self) -> Iterator[bytes]:
        """The response body, unframed; ends by checking the trailer for ``X-Stream-Error``."""
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            yield from self._chunked_body()
            return
        length = self.headers.get("content-length", "0")
        if not length.isdigit():
            raise self._failure(f"Kubo sent a malformed Content-Length: {length[:40]!r}")
        left = int(length)
        while left:
            piece = self._read_some(left)
            left -= len(piece)
            self.received += len(piece)
            yield piece

    def _chunked_body(self) -> Iterator[bytes]:
        """Kubo frames a stream in chunks of 4 KiB: they are unframed here in bulk, and what arrived is
        handed on whenever the socket has nothing more yet, so events still come as they are sent."""
        buffer, pos, out = self.buffer, 0, bytearray()
        while True:
            end = buffer.find(b"\n", pos)
            if end < 0:
                if len(buffer) - pos > MAX_CHUNK_LINE:
                    raise self.broken("Kubo sent a malformed chunked stream")
                yield from self._drain(out)
                pos = self._more(pos)
                continue
            try:
                size = int(buffer[pos:end].split(b";")[0], 16)
            except ValueError:
                raise self.broken("Kubo sent a malformed chunked stream") from None
            if size < 0:
                raise self.broken("Kubo sent a malformed chunked stream")
            if size == 0:
                del buffer[: end + 1]
                break
            start = end + 1
            stop = start + size
            if len(buffer) < stop + 2:
                yield from self._drain(out)
                pos = self._more(pos)
                continue
            if buffer[stop : stop + 2] != b"\r\n":
                raise self.broken("Kubo sent a malformed chunked stream")
            with memoryview(buffer) as view:
                out += view[start:stop]
            self.received += size
            pos = stop + 2
        yield from self._drain(out)
        self._read_trailer()

    def _drain(self, out: bytearray) -> Iterator[bytes]:
        if out:
            piece = bytes(out)
            out.clear()
            yield piece

    def _more(self, pos: int) -> int:
        """Drop the ``pos`` bytes of the buffer already used and wait for more: the new position, 0."""
        del self.buffer[:pos]
        self.buffer += self._recv()
        return 0

    def events(self) -> Iterator[dict[str, Any]]:
        """The JSON values of a response, one per line; an error object in the stream is raised."""
        pending = bytearray()
        for piece in self.body():
            pending += piece
            if len(pending) > MAX_LINE:
                raise self.broken(f"Kubo sent a JSON value larger than {MAX_LINE >> 20} MiB")
            if b"\n" not in piece:  # a long value (a big pin list) arrives in many pieces
                continue
            *lines, rest = pending.split(b"\n")
            pending = bytearray(rest)
            for line in lines:
                if line.strip():
                    yield self._event(line)
        if pending.strip():
            yield self._event(pending)

    def broken(self, reason: str) -> IpfsError:
        """The error for a stream that failed after Kubo had answered 200."""
        if DEADLINE_MESSAGE in reason:
            return self._kubo_timeout()
        return StreamBroken(
            f"ipfs {self.label}: the stream broke after {self.received} bytes: {_one_line(reason)}"
        )

    def _event(self, line: bytes | bytearray) -> dict[str, Any]:
        try:
            value = json.loads(line)
        except ValueError:
            raise self.broken(f"Kubo sent something that is not JSON: {bytes(line[:80])!r}") from None
        if not isinstance(value, dict):
            raise self.broken(f"Kubo sent a JSON {type(value).__name__} where an object belongs")
        if value.get("Type") == "error" and "Message" in value:
            raise self.broken(str(value["Message"]))
        return value

    def _connect(self) -> None:
        wait = max(min(self.clock.remaining(), self.client.timeout), 0.001)
        try:
            self.sock = socket.create_connection((self.client.host, self.client.port), timeout=wait)
        except socket.timeout:  # noqa: UP041 - not yet TimeoutError on the hosts' python 3.9
            raise self._unreachable(f"no connection within {wait:g} s") from None
        except OSError as exc:
            raise self._unreachable(exc.strerror or str(exc)) from None
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(max(self.clock.remaining(), 0.001))
        self.selector.register(self.sock, selectors.EVENT_READ)

    def _send_head(self, target: str, upload: _Upload | None) -> None:
        assert self.sock is not None
        lines = [
            f"POST {target} HTTP/1.1",
            f"Host: {self.client.address}",
            "User-Agent: one-ipfs",
            "Connection: close",
        ]
        if self.client.auth:
            lines.append(f"Authorization: {self.client.auth}")
        whole = upload.whole() if upload is not None else None
        if upload is None:
            lines.append("Content-Length: 0")
        elif whole is not None:
            lines += [f"Content-Type: {upload.content_type()}", f"Content-Length: {len(whole)}"]
        else:
            lines += [f"Content-Type: {upload.content_type()}", "Transfer-Encoding: chunked"]
        try:
            self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        except OSError as exc:
            raise self._unreachable(exc.strerror or str(exc)) from None
        if upload is None:
            return
        self.upload = upload
        if whole is not None:
            with contextlib.suppress(OSError):  # Kubo may answer (a refusal) before reading it all: read that
                self.sock.sendall(whole)
            return
        self.sender = threading.Thread(target=self._send_body, args=(upload,), daemon=True)
        self.sender.start()

    def _send_body(self, upload: _Upload) -> None:
        """Runs beside the reader, because Kubo answers with progress while the file still arrives."""
        assert self.sock is not None
        pieces = upload.pieces(self.clock)
        while True:
            try:
                piece = next(pieces, b"")
            except BaseException as exc:  # the source failed: stop, and let the reader report it
                upload.error = exc
                self._abort()
                return
            try:
                if not piece:
                    self.sock.sendall(b"0\r\n\r\n")
                    return
                self.sock.sendall(b"".join((b"%x\r\n" % len(piece), piece, b"\r\n")))
            except OSError:
                return  # Kubo closed or the reader gave up; the reader reports why
            self.clock.touch()

    def _abort(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)

    def _read_head(self) -> None:
        line = self._readline(8192)
        parts = line.decode("latin-1").split(None, 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise self._unreachable("the service there does not answer like Kubo's RPC API")
        self.status = int(parts[1])
        while True:
            line = self._readline(65536)
            if not line.strip():
                break
            name, _, value = line.decode("latin-1").partition(":")
            self.headers[name.strip().lower()] = value.strip()
            if len(self.headers) > 100:
                raise self._unreachable("the service there sent too many headers")
        self.answered = True

    def _read_trailer(self) -> None:
        while True:
            line = self._readline(65536)
            if not line.strip():
                return
            name, _, value = line.decode("utf-8", "replace").partition(":")
            if name.strip().lower() == "x-stream-error" and value.strip():
                raise self.broken(value.strip())

    def _answer_error(self) -> IpfsError:
        text = bytearray()
        for piece in self.body():
            text += piece
            if len(text) > MAX_ERROR_BODY:
                break
        try:
            message = str(json.loads(text)["Message"])
        except (ValueError, KeyError, TypeError):
            message = text.decode("utf-8", "replace")
        message = _one_line(message)
        where = f"ipfs {self.label}"
        if self.status == 500:
            if DEADLINE_MESSAGE in message:
                return self._kubo_timeout()
            if any(text in message for text in NOT_FOUND_MESSAGES):
                return ContentNotFound(f"{where}: {message}")
            return CommandFailed(f"{where}: {message}")
        if self.status in (401, 403):
            return CommandFailed(
                f"{where}: Kubo at {self.client.address} refused access (HTTP {self.status}): "
                "check the RPC authorization (API.Authorizations)"
            )
        if self.status in (404, 405):
            return CommandFailed(
                f"{where}: Kubo at {self.client.address} has no such command (HTTP {self.status}): "
                "is it Kubo 0.40 or newer?"
            )
        return CommandFailed(f"{where}: Kubo refused the request (HTTP {self.status}): {message}")

    def _readline(self, limit: int) -> bytes:
        while True:
            end = self.buffer.find(b"\n")
            if end >= 0:
                line = bytes(self.buffer[: end + 1])
                del self.buffer[: end + 1]
                return line
            if len(self.buffer) > limit:
                raise self._failure("Kubo sent a line longer than the protocol allows")
            self.buffer += self._recv()

    def _read_some(self, most: int) -> bytes:
        if not self.buffer:
            self.buffer += self._recv()
        piece = bytes(self.buffer[:most])
        del self.buffer[:most]
        return piece

    def _recv(self) -> bytes:
        """Wait for bytes within the clock's bounds; a connection that ends here ended too early."""
        assert self.sock is not None
        while True:
            self._check_upload()
            remaining = self.clock.remaining()
            if remaining <= 0:
                raise self._client_timeout()
            if self.selector.select(min(remaining, 1.0) if self.sender else remaining):
                break
        try:
            data = self.sock.recv(1 << 20)
        except OSError as exc:
            self._check_upload()
            raise self._failure(exc.strerror or str(exc)) from None
        if not data:
            self._check_upload()
            raise self._failure("Kubo closed the connection")
        self.clock.touch()
        return data

    def _kubo_timeout(self) -> IpfsTimeout:
        return IpfsTimeout(
            f"ipfs {self.label}: Kubo gave up after {self.clock.limit:g} s (its timeout ran out)"
        )

    def _client_timeout(self) -> IpfsTimeout:
        if self.clock.stall:
            what = f"made no progress for {self.clock.stall:g} s"
        else:
            what = f"did not {'finish' if self.answered else 'answer'} within {self.clock.limit:g} s"
        return IpfsTimeout(f"ipfs {self.label}: Kubo at {self.client.address} {what}")

    def _check_upload(self) -> None:
        """A source that failed while uploading is the real cause of whatever the reader sees."""
        error = self.upload.error if self.upload is not None else None
        if isinstance(error, OSError):
            raise StorageError(
                f"ipfs {self.label}: reading the file failed: {error.strerror or error}"
            ) from error
        if error is not None:
            raise error

    def _failure(self, reason: str) -> IpfsError:
        return self.broken(reason) if self.answered else self._unreachable(reason)

    def _unreachable(self, reason: str) -> DaemonUnreachable:
        return DaemonUnreachable(
            f"ipfs {self.label}: cannot reach the Kubo RPC API at {self.client.address} "
            f"({_one_line(reason)}): the IPFS daemon may be down or listening elsewhere"
        )


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


def _one_line(text: str) -> str:
    return " ".join(text.split())[:400]
