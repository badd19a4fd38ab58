"""``one-ipfs network init`` and ``one-ipfs doctor`` on the bed, run by oneadmin on the frontend.

Kubo runs as oneadmin on a real host, with its repository at /var/lib/one/.ipfs; here the bed's repositories
are lent to oneadmin (and reached through that path on each host) for the module, and given back afterwards.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from one_ipfs.ipfs.network import generate_swarm_key
from testbed.bed import Bed, Host
from testbed.one import OneSim
from testbed.system import ONEADMIN
from tests.support.nodes import SECRET_FILE, locked_apis

pytestmark = pytest.mark.bed


def chown_tree(top: Path, uid: int, gid: int) -> None:
    for folder, _, files in os.walk(top):
        os.chown(folder, uid, gid)
        for name in files:
            os.chown(Path(folder) / name, uid, gid)


@pytest.fixture(scope="module")
def admin(bed: Bed, one: OneSim) -> Iterator[Bed]:
    """The bed with its Kubo repositories lent to oneadmin and each host's at /var/lib/one/.ipfs."""
    user = pwd.getpwnam(ONEADMIN)
    nodes = bed.nodes
    for node in nodes:
        chown_tree(node.repo, user.pw_uid, user.pw_gid)
    for host in bed.hosts:
        (host.var_lib_one / ".ipfs").symlink_to(host.node.repo)
    try:
        yield bed
    finally:
        for host in bed.hosts:
            (host.var_lib_one / ".ipfs").unlink()
        for node in nodes:
            chown_tree(node.repo, 0, 0)


def one_ipfs(bed: Bed, *args: str) -> subprocess.CompletedProcess[bytes]:
    """``one-ipfs ARGS`` as oneadmin on the frontend, naming the bed's hosts and the frontend node."""
    return bed.frontend_command(
        [sys.executable, "-m", "one_ipfs.admin", *args],
        env={"IPFS_PATH": str(bed.frontend.repo)},
        timeout=300,
    )


def doctor(bed: Bed) -> tuple[int, dict[str, Any]]:
    hosts = ",".join(host.name for host in bed.hosts)
    result = one_ipfs(bed, "doctor", "--hosts", hosts, "--api", bed.frontend.api, "--json")
    assert result.stdout, result.stderr.decode()
    return result.returncode, json.loads(result.stdout)


def problems(report: dict[str, Any]) -> set[tuple[str, str]]:
    return {(p["node"], p["check"]) for p in report["problems"]}


def restart(bed: Bed, host: Host) -> None:
    bed.stop_node(host.node)
    bed.start_node(host.node)


def test_network_init_then_doctor_finds_nothing_wrong(admin: Bed) -> None:
    hosts = ",".join(host.name for host in admin.hosts)

    result = one_ipfs(admin, "network", "init", "--hosts", hosts)

    assert result.returncode == 0, result.stderr.decode()
    for node in admin.nodes:
        assert (node.repo / "swarm.key").read_bytes() == admin.swarm_key
    code, report = doctor(admin)
    assert report["problems"] == []
    assert code == 0
    assert set(report["nodes"]) == {"frontend", *(host.name for host in admin.hosts)}
    assert admin.swarm_key.decode().split()[-1] not in json.dumps(report)


def test_network_status_shows_every_node_in_the_private_network(admin: Bed) -> None:
    hosts = ",".join(host.name for host in admin.hosts)

    result = one_ipfs(admin, "network", "status", "--hosts", hosts, "--api", admin.frontend.api, "--json")

    assert result.returncode == 0, result.stderr.decode()
    rows = {row["node"]: row for row in json.loads(result.stdout)}
    for node in admin.nodes:
        assert rows[node.name]["peer_id"] == node.peer_id
        assert rows[node.name]["private"] == "yes"
        assert rows[node.name]["peers"] >= len(admin.hosts)


def test_doctor_finds_a_host_holding_another_swarm_key(admin: Bed) -> None:
    key = admin.hosts[1].node.repo / "swarm.key"
    original = key.read_bytes()
    key.write_bytes(generate_swarm_key())
    try:
        code, report = doctor(admin)
    finally:
        key.write_bytes(original)

    assert code == 1
    assert problems(report) == {("h2", "private")}
    assert "another swarm key" in report["problems"][0]["what"]


def test_doctor_finds_a_stopped_daemon(admin: Bed) -> None:
    host = admin.hosts[0]
    admin.stop_node(host.node)
    try:
        code, report = doctor(admin)
    finally:
        admin.start_node(host.node)

    assert code == 1
    assert problems(report) == {("h1", "daemon")}
    assert "start the Kubo daemon" in report["problems"][0]["fix"]


def test_doctor_finds_an_rpc_api_open_beyond_loopback(admin: Bed) -> None:
    host = admin.hosts[2]
    config_path = host.node.repo / "config"
    original = config_path.read_bytes()
    config = json.loads(original)
    config["Addresses"]["API"] = "/ip4/0.0.0.0/tcp/5001"
    admin.stop_node(host.node)
    config_path.write_text(json.dumps(config, indent=2))
    admin.start_node(host.node)
    try:
        code, report = doctor(admin)
    finally:
        admin.stop_node(host.node)
        config_path.write_bytes(original)
        admin.start_node(host.node)

    assert code == 1
    assert problems(report) == {("h3", "rpc")}
    assert "/ip4/0.0.0.0/tcp/5001" in report["problems"][0]["what"]


def test_doctor_finds_python3_missing_on_a_host(admin: Bed) -> None:
    bashrc = admin.hosts[0].var_lib_one / ".bashrc"
    bashrc.write_text("PATH=/nonexistent\n")
    try:
        code, report = doctor(admin)
    finally:
        bashrc.unlink()

    assert code == 1
    assert problems(report) == {("h1", "python3")}
    assert report["problems"][0]["fix"] == "install python3 (>= 3.9) on h1"


def test_network_init_on_running_daemons_leaves_a_restart_that_doctor_reports(admin: Bed) -> None:
    hosts = ",".join(host.name for host in admin.hosts)
    host = admin.hosts[1]
    config_path = host.node.repo / "config"
    config = json.loads(config_path.read_text())
    config["Peering"]["Peers"] = config["Peering"]["Peers"][:1]
    config_path.write_text(json.dumps(config, indent=2))

    result = one_ipfs(admin, "network", "init", "--hosts", hosts)

    assert result.returncode == 0, result.stderr.decode()
    assert "Restart the Kubo daemon of h2:" in result.stdout.decode()
    code, report = doctor(admin)
    assert code == 1
    assert problems(report) == {("h2", "restart")}
    restart(admin, host)
    code, report = doctor(admin)
    assert report["problems"] == []
    assert code == 0


@pytest.fixture
def locked(admin: Bed) -> Iterator[str]:
    """Every node's RPC API wants a secret, kept in SECRET_FILE (oneadmin's, 0600) on the frontend and each
    host; the APIs are open again afterwards."""
    secret = f"bearer:{secrets.token_hex(16)}"
    with locked_apis(admin, secret):
        yield secret


def test_doctor_says_which_nodes_refuse_it_without_the_rpc_secret_and_is_green_with_it(
    admin: Bed, locked: str
) -> None:
    code, report = doctor(admin)

    assert code == 1
    assert problems(report) == {(node.name, "auth") for node in admin.nodes}
    assert "refused no secret" in report["problems"][0]["what"]
    hosts = ",".join(host.name for host in admin.hosts)
    result = one_ipfs(
        admin,
        "doctor",
        "--hosts",
        hosts,
        "--api",
        admin.frontend.api,
        "--api-auth-file",
        SECRET_FILE,
        "--host-api-auth-file",
        SECRET_FILE,
        "--json",
    )
    assert json.loads(result.stdout)["problems"] == []
    assert result.returncode == 0
    assert locked.split(":")[1] not in result.stdout.decode() + result.stderr.decode()
