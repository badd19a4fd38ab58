"""The marketplace network the clouds of several beds share, set up as docs/marketplace.md tells an admin.

Each cloud's datastores keep to its own private network (its bed's swarm key and nodes). Beside the frontend's
node runs a second Kubo node, its *market node*, in a network of another swarm key that every cloud's market
node holds, peered with the other frontends' market nodes: each cloud's ``ipfs`` marketplace talks to it
(``IPFS_API``), so catalogues are published and resolved, and apps fetched, over that network only.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Sequence

from one_ipfs.ipfs import network
from testbed import kubo
from testbed.bed import START_TIMEOUT, Bed
from testbed.kubo import KUBO, Node

NAME = "market"


def join_market_network(beds: Sequence[Bed]) -> list[Node]:
    """A started market node on the frontend of each bed, all of one new swarm key, connected."""
    key = network.generate_swarm_key()
    nodes = [bed.add_frontend_node(NAME) for bed in beds]
    for node in nodes:
        configure(node, key, [other for other in nodes if other is not node])
    for bed, node in zip(beds, nodes, strict=True):
        bed.start_node(node, wait_peers=False)
    kubo.wait_connected(nodes, time.monotonic() + START_TIMEOUT)
    return nodes


def configure(node: Node, swarm_key: bytes, peers: Sequence[Node]) -> None:
    """What the admin does to a fresh repository (``ipfs init``): the shared swarm key copied in, then
    ``ipfs config`` of each setting docs/marketplace.md lists."""
    key = node.repo / "swarm.key"
    key.write_bytes(swarm_key)
    key.chmod(0o600)
    for argv in settings(node, peers):
        subprocess.run(
            [str(KUBO), "config", *argv],
            env=kubo.environment(node),
            check=True,
            capture_output=True,
            timeout=60,
        )


def settings(node: Node, peers: Sequence[Node]) -> list[list[str]]:
    """``ipfs config`` arguments of a market node, those of docs/marketplace.md: the addresses it keeps to,
    nothing public dialled, IPNS over pubsub between peers, and a gateway that fetches from them."""
    swarm = json.dumps([node.swarm_address])
    peering = [{"ID": peer.peer_id, "Addrs": [peer.swarm_address]} for peer in peers]
    return [
        ["--json", "Addresses.Swarm", swarm],
        ["--json", "Addresses.Announce", swarm],
        ["Addresses.API", f"/ip4/127.0.0.1/tcp/{node.api_port}"],
        ["Addresses.Gateway", f"/ip4/127.0.0.1/tcp/{node.gateway.rsplit(':', 1)[1]}"],
        ["--json", "Bootstrap", "[]"],
        ["--json", "Discovery.MDNS.Enabled", "false"],
        ["Routing.Type", "dhtserver"],
        ["--json", "AutoTLS.Enabled", "false"],
        ["--json", "HTTPRetrieval.Enabled", "false"],
        ["--json", "Swarm.DisableNatPortMap", "true"],
        ["--json", "Pubsub.Enabled", "true"],
        ["--json", "Ipns.UsePubsub", "true"],
        ["--json", "Peering.Peers", json.dumps(peering)],
    ]


def ipns_name(node: Node, key: str) -> str:
    """The IPNS name of ``key`` of the node (``ipfs key list -l``), which the other clouds are given."""
    listed = subprocess.run(
        [str(KUBO), "key", "list", "-l", "--enc=json"],
        env=kubo.environment(node),
        check=True,
        capture_output=True,
        timeout=60,
    )
    return str(next(k["Id"] for k in json.loads(listed.stdout)["Keys"] if k["Name"] == key))


__all__ = ["NAME", "configure", "ipns_name", "join_market_network", "settings"]
