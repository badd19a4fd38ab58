"""Reading the blocks a node holds through its HTTP gateway, where the bytes of a disk come from.

Standard library only: hosts ship it. Kubo's RPC API frames every stream in 4 KiB chunks and reads a
256 MiB image in about 0.7 s here; its gateway answers with a Content-Length in large writes and
does it in about 0.2 s. Fetching from peers stays with the RPC API, whose calls Kubo bounds by a
timeout: the gateway only reads what the node already has, on loopback. A node without a gateway is
read through the RPC API.
"""

from __future__ import annotations

import http.client
import socket
from collections.abc import Callable

from one_ipfs.errors import CommandFailed, DaemonUnreachable, IpfsTimeout, StreamBroken
from one_ipfs.ipfs.rpc import KuboClient

RAW_BLOCK = "application/vnd.ipld.raw"

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
        connection = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            connection.request("GET", f"/ipfs/{cid}?format=raw", headers={"Accept": RAW_BLOCK})
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
