"""KuboClient's HTTP handling against a scripted loopback server: the failures real Kubo rarely shows."""

from __future__ import annotations

import io
import json
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, urlsplit

import pytest

from one_ipfs.errors import (
    CommandFailed,
    ContentNotFound,
    DaemonUnreachable,
    InvalidInput,
    IpfsTimeout,
    StreamBroken,
)
from one_ipfs.ipfs.rpc import ImportSettings, KuboClient

CID = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"


@dataclass
class Request:
    method: str
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]
    body: bytes = b""


@dataclass
class FakeKubo:
    """Answers every request on a loopback port with what ``respond`` returns (None: hang up)."""

    respond: Callable[[Request], bytes | None]
    requests: list[Request] = field(default_factory=list)
    listener: socket.socket = field(default_factory=socket.socket)

    def __post_init__(self) -> None:
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen()
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}"

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                request = read_request(conn.makefile("rb"))
                self.requests.append(request)
                answer = self.respond(request)
                if answer is None:
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                else:
                    conn.sendall(answer)


def read_request(stream: io.BufferedReader) -> Request:
    method, target, _ = stream.readline().decode().split(" ", 2)
    headers = {}
    while (line := stream.readline().decode().strip()) != "":
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    body = b""
    if headers.get("transfer-encoding") == "chunked":
        while size := int(stream.readline(), 16):
            body += stream.read(size)
            stream.readline()
        stream.readline()
    else:
        body = stream.read(int(headers.get("content-length", "0")))
    url = urlsplit(target)
    return Request(method, url.path, parse_qsl(url.query), headers, body)


def chunked(*pieces: bytes, trailer: str = "", headers: str = "") -> bytes:
    """A 200 answer the way Kubo streams one: chunked, with the ``X-Stream-Error`` trailer announced."""
    head = (
        f"HTTP/1.1 200 OK\r\nTrailer: X-Stream-Error\r\nTransfer-Encoding: chunked\r\n{headers}\r\n".encode()
    )
    body = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces)
    end = f"0\r\n{'X-Stream-Error: ' + trailer + chr(13) + chr(10) if trailer else ''}\r\n".encode()
    return head + body + end


def kubo_error(message: str, status: int = 500) -> bytes:
    body = json.dumps({"Message": message, "Code": 0, "Type": "error"}).encode()
    return f"HTTP/1.1 {status} Error\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body


def plain(status: int, text: str) -> bytes:
    head = f"HTTP/1.1 {status} X\r\nContent-Type: text/plain\r\nContent-Length: {len(text)}\r\n\r\n"
    return (head + text).encode()


@pytest.fixture
def serve() -> Iterator[Callable[[Callable[[Request], bytes | None]], FakeKubo]]:
    servers: list[FakeKubo] = []

    def start(respond: Callable[[Request], bytes | None]) -> FakeKubo:
        servers.append(FakeKubo(respond))
        return servers[-1]

    yield start
    for server in servers:
        server.listener.close()


# Addresses ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("api", "host", "port"),
    [
        ("http://127.0.0.1:5001", "127.0.0.1", 5001),
        ("http://127.0.0.1:5001/", "127.0.0.1", 5001),
        ("http://localhost", "localhost", 80),
        ("http://[::1]:5001", "::1", 5001),
        ("/ip4/127.0.0.1/tcp/5001", "127.0.0.1", 5001),
        ("/ip6/::1/tcp/5002", "::1", 5002),
        ("/dns/localhost/tcp/5003/http", "localhost", 5003),
        ("/dns4/frontend.example/tcp/5004", "frontend.example", 5004),
    ],
)
def test_an_api_address_is_a_url_or_a_multiaddr(api: str, host: str, port: int) -> None:
    client = KuboClient(api)
    assert (client.host, client.port) == (host, port)


@pytest.mark.parametrize(
    "api",
    [
        "https://127.0.0.1:5001",
        "http://127.0.0.1:99999",
        "http://127.0.0.1:5001/api/v0",
        "/ip4/127.0.0.1/udp/5001",
        "/ip4/127.0.0.1/tcp/http",
        "/unix/var/run/kubo.sock",
        "127.0.0.1:5001",
        "",
    ],
)
def test_anything_else_is_refused_as_an_rpc_address(api: str) -> None:
    with pytest.raises(InvalidInput, match="not a Kubo RPC address"):
        KuboClient(api)


def test_an_authorization_of_more_than_one_line_is_refused() -> None:
    with pytest.raises(InvalidInput, match="single line"):
        KuboClient(auth="Bearer x\r\nX-Evil: 1")


# Requests ----------------------------------------------------------------------------------------------


def test_a_command_is_a_post_with_repeated_args_flags_and_kubos_timeout(
    serve: Callable[..., FakeKubo],
) -> None:
    server = serve(lambda request: chunked(b'{"Pins":["x"]}\n'))
    KuboClient(server.api, auth="Bearer s3cret").pin_add(CID, name="one-vm42-disk0", timeout=2.5)
    server_two = serve(lambda request: chunked(b""))
    KuboClient(server_two.api).files_cp("/ipfs/" + CID, "/one-ipfs/refs/x y")
    pin, copy = server.requests[0], server_two.requests[0]
    assert (pin.method, pin.path) == ("POST", "/api/v0/pin/add")
    assert pin.query == [
        ("arg", CID),
        ("recursive", "true"),
        ("name", "one-vm42-disk0"),
        ("timeout", "2500ms"),
    ]
    assert pin.headers["authorization"] == "Bearer s3cret"
    assert pin.headers["content-length"] == "0"
    assert "authorization" not in copy.headers
    assert copy.query == [("arg", "/ipfs/" + CID), ("arg", "/one-ipfs/refs/x y"), ("parents", "true")]


def test_add_uploads_one_multipart_file_in_chunks_with_the_import_settings(
    serve: Callable[..., FakeKubo],
) -> None:
    data = bytes(range(256)) * 9000
    server = serve(
        lambda request: chunked(b'{"Name":"disk","Bytes":2304000}\n{"Name":"disk","Hash":"bafy1"}\n')
    )
    added = KuboClient(server.api).add(
        io.BytesIO(data), settings=ImportSettings(chunker="size-262144"), pin=False
    )
    request = server.requests[0]
    boundary = request.headers["content-type"].split("boundary=")[1]
    head, _, rest = request.body.partition(b"\r\n\r\n")
    assert b'name="file"; filename="disk"' in head
    assert rest == data + f"\r\n--{boundary}--\r\n".encode()
    assert request.headers["transfer-encoding"] == "chunked"
    assert dict(request.query) == {
        "chunker": "size-262144",
        "cid-version": "1",
        "raw-leaves": "true",
        "hash": "sha2-256",
        "pin": "false",
        "progress": "true",
    }
    assert (added.cid, added.size) == ("bafy1", len(data))


def test_block_put_sends_the_block_whole_with_its_length_and_returns_kubos_cid(
    serve: Callable[..., FakeKubo],
) -> None:
    block = os.urandom(1 << 20)
    server = serve(lambda request: chunked(b'{"Key":"%s","Size":1048576}\n' % CID.encode()))

    assert KuboClient(server.api).block_put(block) == CID
    request = server.requests[0]
    boundary = request.headers["content-type"].split("boundary=")[1]
    head, _, rest = request.body.partition(b"\r\n\r\n")
    assert b'name="file"; filename="block"' in head
    assert rest == block + f"\r\n--{boundary}--\r\n".encode()
    assert int(request.headers["content-length"]) == len(request.body)
    assert "transfer-encoding" not in request.headers


def test_a_refusal_sent_before_the_block_was_read_is_the_error() -> None:
    """Kubo refuses a wrong secret on the request's head and hangs up without reading the body."""
    listener = socket.create_server(("127.0.0.1", 0))

    def refuse_on_the_head() -> None:
        conn, _ = listener.accept()
        with conn:
            stream = conn.makefile("rb")
            while stream.readline().strip():
                pass
            conn.sendall(plain(403, "403 - Forbidden"))
            time.sleep(0.5)  # meanwhile the body fills the buffers, then the close resets the connection

    threading.Thread(target=refuse_on_the_head, daemon=True).start()
    try:
        with pytest.raises(CommandFailed, match="refused access \\(HTTP 403\\)"):
            KuboClient(f"http://127.0.0.1:{listener.getsockname()[1]}").block_put(os.urandom(8 << 20))
    finally:
        listener.close()


def test_cat_regroups_kubos_pieces_into_the_chunk_size(serve: Callable[..., FakeKubo]) -> None:
    data = bytes(range(100))
    pieces = [data[i : i + 7] for i in range(0, 100, 7)]
    server = serve(lambda request: chunked(*pieces, headers="X-Content-Length: 100\r\n"))
    assert [len(piece) for piece in KuboClient(server.api).cat("/ipfs/" + CID, chunk_size=30)] == [
        30,
        30,
        30,
        10,
    ]


def test_a_json_answer_split_into_many_pieces_is_read_whole(serve: Callable[..., FakeKubo]) -> None:
    keys = {
        f"bafy{number}": {"Type": "recursive", "Name": f"one-ds100-img{number}-v1"} for number in range(2000)
    }
    answer = json.dumps({"Keys": keys}).encode() + b"\n"
    server = serve(lambda request: chunked(*(answer[i : i + 3] for i in range(0, len(answer), 3))))
    pins = KuboClient(server.api).pin_ls()
    assert len(pins) == 2000
    assert (pins[7].cid, pins[7].type, pins[7].name) == ("bafy7", "recursive", "one-ds100-img7-v1")


# Failures ----------------------------------------------------------------------------------------------


def test_a_stream_error_in_the_trailer_is_stream_broken(serve: Callable[..., FakeKubo]) -> None:
    server = serve(lambda request: chunked(b"x" * 4096, trailer="failed to fetch all nodes"))
    with pytest.raises(
        StreamBroken, match=r"^ipfs cat /ipfs/\S+: the stream broke after 4096 bytes: failed to fe"
    ):
        list(KuboClient(server.api).cat("/ipfs/" + CID))


def test_kubos_deadline_in_the_trailer_is_a_timeout(serve: Callable[..., FakeKubo]) -> None:
    server = serve(lambda request: chunked(b"{}\n", trailer="context deadline exceeded"))
    with pytest.raises(IpfsTimeout, match=r"Kubo gave up after 3 s"):
        KuboClient(server.api).pin_add(CID, progress=lambda progress: None, timeout=3)


def test_an_error_object_in_a_json_stream_is_stream_broken(serve: Callable[..., FakeKubo]) -> None:
    events = b'{"Key":{"/":"bafy1"}}\n{"Message":"write: no space left on device","Type":"error"}\n'
    server = serve(lambda request: chunked(events))
    with pytest.raises(StreamBroken, match="no space left on device"):
        KuboClient(server.api).repo_gc()


def test_a_stream_shorter_than_announced_is_stream_broken(serve: Callable[..., FakeKubo]) -> None:
    server = serve(lambda request: chunked(b"x" * 10, headers="X-Content-Length: 20\r\n"))
    with pytest.raises(StreamBroken, match="announced 20 bytes"):
        list(KuboClient(server.api).cat("/ipfs/" + CID))


def test_a_connection_cut_mid_stream_is_stream_broken(serve: Callable[..., FakeKubo]) -> None:
    server = serve(lambda request: chunked(b"x" * 1000)[:-200])
    with pytest.raises(StreamBroken, match="Kubo closed the connection"):
        list(KuboClient(server.api).cat("/ipfs/" + CID))


def test_a_connection_reset_before_an_answer_is_daemon_unreachable(serve: Callable[..., FakeKubo]) -> None:
    server = serve(lambda request: None)
    with pytest.raises(DaemonUnreachable, match="may be down"):
        KuboClient(server.api).version()


def test_a_service_that_is_not_kubo_is_daemon_unreachable(serve: Callable[..., FakeKubo]) -> None:
    server = serve(lambda request: b"SSH-2.0-OpenSSH_9.2\r\n")
    with pytest.raises(DaemonUnreachable, match="does not answer like Kubo"):
        KuboClient(server.api).version()


def test_a_daemon_that_never_answers_is_a_timeout_at_the_client_deadline(
    serve: Callable[..., FakeKubo],
) -> None:
    release = threading.Event()

    def hang(request: Request) -> None:
        release.wait(10)

    server = serve(hang)
    try:
        with pytest.raises(IpfsTimeout, match=r"did not answer within 0\.5 s"):
            KuboClient(server.api, timeout=0.5).id()
    finally:
        release.set()


@pytest.mark.parametrize(
    ("answer", "error", "message"),
    [
        (kubo_error("not pinned or pinned indirectly"), ContentNotFound, "^ipfs pin rm \\S+: not pinned or"),
        (kubo_error("context deadline exceeded"), IpfsTimeout, "its timeout ran out"),
        (
            kubo_error("pin: merkledag:\n  bad\tnode"),
            CommandFailed,
            "^ipfs pin rm \\S+: pin: merkledag: bad node$",
        ),
        (plain(403, "403 - Forbidden"), CommandFailed, "refused access \\(HTTP 403\\)"),
        (plain(404, "404 page not found"), CommandFailed, "has no such command \\(HTTP 404\\)"),
        (plain(400, "unknown option"), CommandFailed, "refused the request \\(HTTP 400\\): unknown option"),
    ],
)
def test_an_error_answer_becomes_one_line_of_the_matching_error(
    serve: Callable[..., FakeKubo], answer: bytes, error: type[Exception], message: str
) -> None:
    server = serve(lambda request: answer)
    with pytest.raises(error, match=message):
        KuboClient(server.api).pin_rm(CID)
