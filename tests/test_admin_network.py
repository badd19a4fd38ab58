"""From a cloud that has never seen one-ipfs to the first VM: the admin tool on a bed of its own.

The bed's Kubo nodes start as an admin finds them: repositories that know nothing of each other (no swarm
key, no peering; like every bed node, never dialling anything public) with their daemons stopped, and a
remotes tree without the drivers. The bed sits in the last /28 of the session bed's network (a more
specific route, so both run side by side) with frontend ports of its own.
"""

from __future__ import annotations

import io
import ipaddress
import json
import os
import pwd
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from one_ipfs.ipfs.rpc import ImportSettings
from testbed.bed import Bed, Layout
from testbed.one import OneSim
from testbed.one.bedrunner import BedRunner
from testbed.system import ONEADMIN
from tests.conftest import _layout
from tests.support.datastores import ipfs_datastore_template
from tests.support.images import disk_bytes, sha256
from tests.test_admin_doctor import chown_tree
from tests.test_admin_install import ONED_CONF

pytestmark = pytest.mark.bed

PORT_SHIFT = 50


@dataclass(frozen=True)
class Fresh:
    """The fresh cloud: its bed (frontend, h1, h2) and oned (the simulator, no drivers installed)."""

    bed: Bed
    one: OneSim


def fresh_layout(session: Layout) -> Layout:
    """The last /28 of the session bed's network, its prefix with a ``p``, its frontend ports + 50."""
    network = ipaddress.IPv4Network(f"{session.frontend_address}/{session.prefix_length}", strict=False)
    last = list(network.subnets(new_prefix=28))[-1]
    return Layout(
        prefix=f"{session.prefix}p",
        frontend_address=str(last.network_address + 1),
        prefix_length=28,
        extra_offset=13,
        frontend_api_port=session.frontend_api_port + PORT_SHIFT,
        frontend_gateway_port=session.frontend_gateway_port + PORT_SHIFT,
    )


@pytest.fixture(scope="module")
def fresh() -> Iterator[Fresh]:
    if os.geteuid() != 0:
        pytest.skip("the test bed needs root (network namespaces, mounts, sshd); run the tests as root")
    layout = fresh_layout(_layout())
    user = pwd.getpwnam(ONEADMIN)
    with Bed.up(hosts=2, root=layout.root, layout=layout, plain=True) as bed:
        for node in bed.nodes:
            chown_tree(node.repo, user.pw_uid, user.pw_gid)
        for host in bed.hosts:
            (host.var_lib_one / ".ipfs").symlink_to(host.node.repo)
        oned_conf = bed.frontend_var_lib_one / "oned.conf"
        oned_conf.write_text(ONED_CONF)
        os.chown(oned_conf, user.pw_uid, user.pw_gid)
        one = OneSim(BedRunner(bed), state=bed.root / "one")
        yield Fresh(bed, one)
        one.close()


def one_ipfs(fresh: Fresh, *args: str) -> tuple[int, str, str]:
    """``one-ipfs ARGS`` as oneadmin on the frontend, OpenNebula's commands on PATH."""
    result = fresh.bed.frontend_command(
        [sys.executable, "-m", "one_ipfs.admin", *args],
        env={**fresh.one.environment(), "IPFS_PATH": str(fresh.bed.frontend.repo), "COLUMNS": "250"},
        timeout=300,
    )
    return result.returncode, result.stdout.decode(), result.stderr.decode()


def doctor(fresh: Fresh) -> tuple[int, dict[str, Any]]:
    code, out, err = one_ipfs(fresh, "doctor", "--api", fresh.bed.frontend.api, "--json")
    assert out, err
    return code, json.loads(out)


def test_doctor_on_a_cloud_without_one_ipfs_says_what_to_do(fresh: Fresh) -> None:
    for node in fresh.bed.nodes:
        config = json.loads((node.repo / "config").read_text())
        assert not (node.repo / "swarm.key").exists()
        assert config["Peering"]["Peers"] == []
        assert config["Bootstrap"] == []
        assert config["Discovery"]["MDNS"]["Enabled"] is False

    code, report = doctor(fresh)

    assert code == 1
    found = {(p["node"], p["check"]) for p in report["problems"]}
    assert ("frontend", "drivers") in found
    assert {("frontend", "daemon"), ("h1", "daemon"), ("h2", "daemon")} <= found
    assert {("frontend", "private"), ("h1", "private"), ("h2", "private")} <= found


def test_install_network_init_and_join_bring_doctor_to_green_and_a_vm_deploys(fresh: Fresh) -> None:
    bed, one = fresh.bed, fresh.one

    code, out, err = one_ipfs(fresh, "install", "--oned-conf", "/var/lib/one/oned.conf")
    assert code == 0, err
    assert "onehost sync" in out
    code, out, err = one_ipfs(fresh, "network", "init", "--hosts", "h1")
    assert code == 0, err
    assert "Restart the Kubo daemon of frontend, h1:" in out
    code, out, err = one_ipfs(fresh, "network", "join", "h2")
    assert code == 0, err
    assert "Restart the Kubo daemon of frontend, h1, h2:" in out
    code, out, err = one_ipfs(fresh, "network", "status", "--api", bed.frontend.api, "--json")
    assert code == 1, err  # every daemon is still down
    assert {row["node"]: row["restart_pending"] for row in json.loads(out)} == {
        "frontend": True,
        "h1": True,
        "h2": True,
    }
    for node in bed.nodes:
        bed.start_node(node)
    one.onehost_sync()
    code, report = doctor(fresh)

    assert report["problems"] == []
    assert code == 0
    key = (bed.frontend.repo / "swarm.key").read_bytes()
    for node in bed.nodes:
        assert (node.repo / "swarm.key").read_bytes() == key
        peers = json.loads((node.repo / "config").read_text())["Peering"]["Peers"]
        assert {peer["ID"] for peer in peers} == {o.peer_id for o in bed.nodes if o is not node}
    ds = one.datastore_create(ipfs_datastore_template(bed, "ipfs"))
    data = disk_bytes(4 << 20, seed=61)
    cid = bed.frontend.client().add(io.BytesIO(data), settings=ImportSettings()).cid
    image = one.image_create(ds, name="first", path=f"/ipfs/{cid}")
    vm = one.vm_deploy([image], "h2")
    disk = bed.host("h2").var_lib_one / "datastores" / "0" / str(vm.id) / "disk.0"
    assert sha256(disk.read_bytes()) == sha256(data)


def test_systemd_unit_on_nodes_that_systemd_does_not_run_fails_per_node_and_writes_no_unit(
    fresh: Fresh,
) -> None:
    """The bed's nodes are a machine without a running systemd (a systemctl binary may still be there)."""
    code, _, err = one_ipfs(fresh, "install", "--oned-conf", "/var/lib/one/oned.conf")
    assert code == 0, err

    code, out, err = one_ipfs(
        fresh, "network", "init", "--hosts", "h1,h2", "--systemd-unit", "--unit", "one-ipfs-bed-test"
    )

    assert code == 1, err
    rows = {line.split()[1]: line for line in out.splitlines() if line.startswith("│")}
    for node in ("frontend", "h1", "h2"):
        assert "failed (systemd does not run here" in rows[node]
    assert not os.path.exists("/etc/systemd/system/one-ipfs-bed-test.service")
