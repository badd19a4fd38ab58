"""Isolation that needs no OpenNebula: the secrets of Kubo's ``API.Authorizations`` read from files and
never shown, and no node's RPC API or gateway answering from another namespace of the bed.

What the drivers do under isolation (no byte to or from a node outside the private network, a life
cycle with a secret on every node, refused secrets) is proven under genuine oned, in
tests/opennebula/test_isolation.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from one_ipfs.config import load_config
from one_ipfs.errors import InvalidInput, StorageError
from one_ipfs.host.inputs import secret_file
from one_ipfs.ipfs.rpc import ImportSettings, authorization, authorization_from_file
from testbed import kubo
from testbed.bed import Bed
from testbed.kubo import Node
from tests.support.nodes import SECRET_FILE

SETTINGS = ImportSettings()
MIB = 1 << 20
# Connects to each (address, port) and prints what happened, from whichever namespace it runs in.
PROBE = """
import json, socket, sys
results = []
for address, port in json.loads(sys.argv[1]):
    try:
        socket.create_connection((address, port), timeout=5).close()
        results.append("connected")
    except OSError as exc:
        results.append(type(exc).__name__)
print(json.dumps(results))
"""


# Secrets in files: what the drivers send --------------------------------------------------------------------


def test_an_auth_secret_becomes_the_authorization_header_kubo_expects() -> None:
    assert authorization("bearer:t0ken") == "Bearer t0ken"
    assert authorization("t0ken") == "Bearer t0ken"
    assert authorization("basic:alice:pa:ss") == "Basic YWxpY2U6cGE6c3M="
    assert authorization("basic:YWxpY2U6cGFzcw==") == "Basic YWxpY2U6cGFzcw=="


def test_a_missing_or_malformed_secret_file_fails_with_one_line_that_does_not_show_the_secret(
    tmp_path: Path,
) -> None:
    with pytest.raises(
        StorageError, match="IPFS_API_AUTH_FILE: cannot read the Kubo RPC secret file"
    ) as missing:
        authorization_from_file(str(tmp_path / "absent"), "IPFS_API_AUTH_FILE")
    two_lines = tmp_path / "two-lines"
    two_lines.write_text("bearer:first-s3cret\nbearer:second-s3cret\n")
    with pytest.raises(InvalidInput, match="must hold one line") as malformed:
        authorization_from_file(str(two_lines), "IPFS_HOST_API_AUTH_FILE")
    for failure in (missing, malformed):
        assert "\n" not in str(failure.value)
        assert "s3cret" not in str(failure.value)


def test_a_secret_written_where_its_file_belongs_is_refused_without_being_shown() -> None:
    with pytest.raises(InvalidInput, match="must be the absolute path of the file") as frontend:
        load_config({"IPFS_API_AUTH_FILE": "bearer:s3cret"}, defaults={})
    with pytest.raises(InvalidInput, match="must be the absolute path of the file") as host:
        secret_file("basic:oneadmin:s3cret")
    for failure in (frontend, host):
        assert "s3cret" not in str(failure.value)
    config = load_config({"IPFS_HOST_API_AUTH_FILE": SECRET_FILE}, defaults={})
    assert (config.api_authorization(), config.host_api_auth_file) == (None, SECRET_FILE)


# The private network, seen by the drivers ------------------------------------------------------------------


@pytest.mark.bed
def test_no_rpc_api_or_gateway_answers_from_another_namespace(bed: Bed, outsider: Node) -> None:
    ports = sorted(
        {kubo.API_PORT, kubo.GATEWAY_PORT, bed.layout.frontend_api_port, bed.layout.frontend_gateway_port}
    )
    # The outsider only knocks: its own API is no bed node's.
    addresses = {n.name: n.swarm_address.split("/")[2] for n in bed.nodes}
    namespaces: dict[str, str | None] = {
        "root": None,
        **{n.name: n.netns for n in [*bed.nodes[1:], outsider]},
    }
    tried = 0
    for source, netns in namespaces.items():
        # Every other node's address, and loopback where another namespace's API listens (the frontend's).
        targets = [(address, port) for name, address in addresses.items() if name != source for port in ports]
        if netns is not None:
            # Unless the frontend uses the hosts' own ports: then loopback there is the node's own API.
            targets += [
                ("127.0.0.1", port)
                for port in (bed.layout.frontend_api_port, bed.layout.frontend_gateway_port)
                if port not in (kubo.API_PORT, kubo.GATEWAY_PORT)
            ]
        inside = [] if netns is None else ["ip", "netns", "exec", netns]
        result = subprocess.run(
            [*inside, sys.executable, "-c", PROBE, json.dumps(targets)], capture_output=True, check=True
        )
        outcomes = dict(zip(map(tuple, targets), json.loads(result.stdout), strict=True))
        # Refused, as a rule; a target the network did not reach in time (a link a fault test cut and healed,
        # its neighbour entry still stale) is no answer either.
        answered = [target for target, how in outcomes.items() if how == "connected"]
        assert answered == [], source
        tried += len(targets)
    # Each namespace knocked on every other node's API and gateway.
    assert tried >= len(namespaces) * (len(addresses) - 1) * len(ports)
