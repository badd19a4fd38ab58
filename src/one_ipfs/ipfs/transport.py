"""How a ``KuboClient`` call reaches Kubo: the call and answer it hands to its wire, and the one real wire.

The client (``ipfs/rpc.py``) turns each command into a ``Call`` and reads the ``Response`` a transport
returns; ``HttpTransport`` is the wire to a node's RPC API, and tests give the client a fake transport
instead, so a fake node answers commands without re-declaring the client.

Standard library only, because hosts run it with whatever python3 they have. It speaks HTTP/1.1 on a
socket of its own rather than through ``http.client``: Kubo reports an error that happens after a stream
has started in the HTTP trailer ``X-Stream-Error``, which ``http.client`` throws away, and an import must
upload and read progress at the same time.

Every call is bounded. A call ends by its deadline (the call's ``timeout``, else the transport's); when a
call gives its own timeout Kubo gets it too (``timeout=``), so Kubo stops working when the client stops
waiting. Closing a connection cancels the command in Kubo.
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Protocol

from one_ipfs.errors import (
    AccessRefused,
    CommandFailed,
    ContentNotFound,
    DaemonUnreachable,
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
MAX_LINE = 64 << 20
MAX_ERROR_BODY = 1 << 16
MAX_CHUNK_LINE = 1024


@dataclass(frozen=True)
class Call:
    """One command of the RPC API: ``ipfs <endpoint> <args> --<params>``, bounded by ``timeout`` (which
    Kubo gets too) or else by the transport's own, which ``stall`` makes a time with nothing moving
    instead of a deadline (an import lasts as long as its file is big)."""

    endpoint: str
    args: tuple[str, ...] = ()
    params: dict[str, str] = field(default_factory=dict)
    timeout: float | None = None
    upload: Upload | None = None
    stall: bool = False

    @property
    def label(self) -> str:
        """The command as errors name it: ``ipfs <label>``."""
        return " ".join([self.endpoint.replace("/", " "), *(arg[:120] for arg in self.args[:1])])


class Response(Protocol):
    """A command's answer as it streams in; an error answer was raised by the transport instead."""

    headers: dict[str, str]
    """Its headers, names in lower case."""
    received: int
    """Bytes of body read so far."""

    def body(self) -> Iterator[bytes]:
        """The body's bytes as they come."""
        ...

    def events(self) -> Iterator[dict[str, Any]]:
        """The JSON objects of the body, one per line; an error object in the stream is raised."""
        ...

    def broken(self, reason: str) -> IpfsError:
        """The error for an answer that went wrong after it had started."""
        ...

    def interrupt(self) -> None:
        """End a read blocked in another thread (a pubsub subscription being closed)."""
        ...

    def close(self) -> None:
        """Let go of the answer: a command still running in Kubo is cancelled."""
        ...


Transport = Callable[[Call], Response]
"""The wire under a ``KuboClient``: ``HttpTransport``, or a fake node in tests."""


class HttpTransport:
    """Kubo's RPC API at ``host:port`` over HTTP/1.1, one connection per call (``Connection: close``)."""

    def __init__(self, host: str, port: int, timeout: float, auth: str | None = None) -> None:
        self.host, self.port = host, port
        self.address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.timeout = timeout
        self.auth = auth

    def __call__(self, call: Call) -> _Exchange:
        query = [("arg", arg) for arg in call.args] + list(call.params.items())
        if call.timeout is not None:
            query.append(("timeout", f"{max(int(call.timeout * 1000), 1)}ms"))
        if call.timeout:
            clock = Clock(call.timeout, 0, KUBO_FIRST)
        else:
            clock = Clock(0, self.timeout, 0) if call.stall else Clock(self.timeout, 0, 0)
        exchange = _Exchange(self, call.label, clock)
        exchange.start(
            f"/api/v0/{call.endpoint}?{urllib.parse.urlencode(query, quote_via=urllib.parse.quote)}",
            call.upload,
        )
        return exchange


class Clock:
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


class Upload:
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

    def pieces(self, clock: Clock) -> Iterator[bytes]:
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

    def __init__(self, wire: HttpTransport, label: str, clock: Clock) -> None:
        self.wire = wire
        self.label = label
        self.clock = clock
        self.sock: socket.socket | None = None
        self.selector = selectors.DefaultSelector()
        self.buffer = bytearray()
        self.answered = False
        self.upload: Upload | None = None
        self.sender: threading.Thread | None = None
        self.status = 0
        self.headers: dict[str, str] = {}
        self.received = 0

    def start(self, target: str, upload: Upload | None) -> None:
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
        wait = max(min(self.clock.remaining(), self.wire.timeout), 0.001)
        try:
            self.sock = socket.create_connection((self.wire.host, self.wire.port), timeout=wait)
        except socket.timeout:  # noqa: UP041 - not yet TimeoutError on the hosts' python 3.9
            raise self._unreachable(f"no connection within {wait:g} s") from None
        except OSError as exc:
            raise self._unreachable(exc.strerror or str(exc)) from None
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.settimeout(max(self.clock.remaining(), 0.001))
        self.selector.register(self.sock, selectors.EVENT_READ)

    def _send_head(self, target: str, upload: Upload | None) -> None:
        assert self.sock is not None
        lines = [
            f"POST {target} HTTP/1.1",
            f"Host: {self.wire.address}",
            "User-Agent: one-ipfs",
            "Connection: close",
        ]
        if self.wire.auth:
            lines.append(f"Authorization: {self.wire.auth}")
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

    def _send_body(self, upload: Upload) -> None:
        """Runs beside the reader, because Kubo answers with progress while the file still arrives."""
        assert self.sock is not None
        pieces = upload.pieces(self.clock)
        while True:
            try:
                piece = next(pieces, b"")
            except BaseException as exc:  # the source failed: stop, and let the reader report it
                upload.error = exc
                self.interrupt()
                return
            try:
                if not piece:
                    self.sock.sendall(b"0\r\n\r\n")
                    return
                self.sock.sendall(b"".join((b"%x\r\n" % len(piece), piece, b"\r\n")))
            except OSError:
                return  # Kubo closed or the reader gave up; the reader reports why
            self.clock.touch()

    def interrupt(self) -> None:
        """Shut the connection under a reader blocked in another thread, or under the upload."""
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
            return AccessRefused(
                f"{where}: Kubo at {self.wire.address} refused access (HTTP {self.status}): "
                "check the RPC authorization (API.Authorizations)"
            )
        if self.status in (404, 405):
            return CommandFailed(
                f"{where}: Kubo at {self.wire.address} has no such command (HTTP {self.status}): "
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
        return IpfsTimeout(f"ipfs {self.label}: Kubo at {self.wire.address} {what}")

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
            f"ipfs {self.label}: cannot reach the Kubo RPC API at {self.wire.address} "
            f"({_one_line(reason)}): the IPFS daemon may be down or listening elsewhere"
        )


def _one_line(text: str) -> str:
    return " ".join(text.split())[:400]
