"""Reading the blocks a node holds through its HTTP gateway, where the bytes of a disk come from.

Standard library only: hosts ship it. Kubo's RPC API frames every stream in 4 KiB chunks and reads a
256 MiB image in about 0.7 s here; its gateway answers with a Content-Length in large writes and
does it in about 0.2 s. Fetching from peers stays with the RPC API, whose calls Kubo bounds by a
timeout: the gateway only reads what the node already has (``Gateway.NoFetch``). A node without a
gateway is read through the RPC API.

Hosts fetching one image together also read each other's blocks through their gateways, over a libp2p
stream inside the private network (``one_ipfs.ipfs.fleet``): the local gateway proxies the request to
the peer's, whose node listens for PEER_PROTOCOL. Such a block is checked against its CID here.
"""

from __future__ import annotations

import hashlib
import http.client
import socket
from collections.abc import Callable

from one_ipfs.errors import CommandFailed, DaemonUnreachable, InvalidInput, IpfsTimeout, StreamBroken
from one_ipfs.ipfs.paths import RAW, SHA2_256, Cid, parse_cid
from one_ipfs.ipfs.rpc import KuboClient

RAW_BLOCK = "application/vnd.ipld.raw"
PEER_PROTOCOL = "/x/one-ipfs-blocks/http"
"""The libp2p protocol under which a host's node passes its peers' requests on to its gateway."""

BlockReader = Callable[[str, float], bytes]
"""``read(cid, timeout)``: the bytes of a block the node holds."""


def block_reader(client: KuboClient) -> BlockReader:
    """The node's gateway if it has one, else its RPC API."""
    address = client.gateway_address()
    if address is None:
        return lambda cid, timeout: client.block_get(cid, timeout=timeout)
    return Gateway(*address).block


class Gateway:
    """A node's trustless gateway at ``host:port``."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port

    def block(self, cid: str, timeout: float) -> bytes:
        """One raw block, whole: an answer cut short is an error, never a short block."""
        where = f"the IPFS gateway at {self.host}:{self.port}"
        return self._get(f"/ipfs/{cid}?format=raw", cid, timeout, where)

    def peer_block(self, peer: str, cid: str, timeout: float) -> bytes:
        """One raw block that ``peer`` holds, read through its gateway and checked against ``cid``,
        which must be one that ``checkable`` accepts."""
        if not (peer.isascii() and peer.isalnum()):
            raise InvalidInput(f"{peer!r} is no peer ID")
        expected = _raw_sha256(cid)
        if expected is None:
            raise InvalidInput(f"{cid} names no raw sha2-256 block")
        protocol = PEER_PROTOCOL.removeprefix("/")
        data = self._get(f"/p2p/{peer}/{protocol}/ipfs/{cid}?format=raw", cid, timeout, f"peer {peer}")
        if hashlib.sha256(data).digest() != expected.digest:
            raise StreamBroken(f"peer {peer} sent other bytes than block {cid}")
        return data

    def _get(self, path: str, cid: str, timeout: float, where: str) -> bytes:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            connection.request("GET", path, headers={"Accept": RAW_BLOCK})
            response = connection.getresponse()
            data = response.read()
        except socket.timeout:  # noqa: UP041 - not yet TimeoutError on the hosts' python 3.9
            raise IpfsTimeout(f"{where} did not send block {cid} within {timeout:g} s") from None
        except http.client.IncompleteRead:
            raise StreamBroken(f"{where} sent block {cid} cut short") from None
        except (OSError, http.client.HTTPException) as exc:
            raise DaemonUnreachable(
                f"cannot read block {cid} from {where}: {exc.__class__.__name__}"
            ) from None
        finally:
            connection.close()
        if response.status != http.client.OK:
            raise CommandFailed(f"{where} answered HTTP {response.status} for block {cid}")
        return data


def checkable(cid: str) -> bool:
    """Whether ``cid`` names a raw sha2-256 block (as image leaves are), whose bytes are checked here, in
    Kubo's canonical form (which has no character a URL would treat apart)."""
    return _raw_sha256(cid) is not None


def _raw_sha256(cid: str) -> Cid | None:
    try:
        parsed = parse_cid(cid)
    except InvalidInput:
        return None
    if parsed.codec == RAW and parsed.hash_code == SHA2_256 and parsed.v1_base32() == cid:
        return parsed
    return None
