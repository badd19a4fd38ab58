"""From a cloud that has never seen one-ipfs to its first VM, under genuine oned on a bed of its own.

oned runs without the drivers, its two hosts added and MONITORED; the bed's Kubo nodes start as an admin finds
them: repositories that know nothing of each other (no swarm key, no peering; like every bed node, never
dialling anything public) with their daemons stopped. The admin then does what docs/install.md says:
``one-ipfs install``, a restart of oned, ``network init`` and ``join``, the daemons started, ``onehost sync``,
``doctor``, and the first image and VM. The bed sits in the last /28 of the session bed's network (a more
specific route, so both run side by side) with frontend ports of its own. Run on the current version only:
what ``install`` writes into each version's oned.conf every genuine cloud's start proves (docs/testing.md).
"""

from __future__ import annotations

import io
import json
import os
import pwd
from collections.abc import Iterator
from typing import Any

import pytest

from one_ipfs.ipfs.rpc import ImportSettings
from testbed.bed import Bed
from testbed.genuine import VERSIONS, Frontend, GenuineOne, Unavailable, installation
from testbed.system import ONEADMIN
from tests.conftest import _layout
from tests.opennebula.test_admin_images import one_ipfs
from tests.support.beds import fresh_layout
from tests.support.datastores import ipfs_datastore_template
from tests.support.images import disk_bytes, sha256
from tests.support.vms import disk_path
from tests.test_admin_doctor import chown_tree

pytestmark = [pytest.mark.bed, pytest.mark.opennebula]


@pytest.fixture(scope="module", params=VERSIONS[:1])
def fresh(request: pytest.FixtureRequest) -> Iterator[GenuineOne]:
    """genuine oned of the current version without the drivers, on a bed of frontend, h1 and h2."""
    if os.geteuid() != 0:
        pytest.skip("the test bed needs root (network namespaces, mounts, sshd); run the tests as root")
    try:
        found = installation(request.param)
    except Unavailable as missing:
        pytest.skip(f"genuine OpenNebula {request.param} not run: {missing}")
    layout = fresh_layout(_layout())
    user = pwd.getpwnam(ONEADMIN)
    with Bed.up(hosts=2, root=layout.root, layout=layout, plain=True) as bed:
        for node in bed.nodes:
            chown_tree(node.repo, user.pw_uid, user.pw_gid)
        (bed.frontend_var_lib_one / ".ipfs").symlink_to(bed.frontend.repo)
        for host in bed.hosts:
            (host.var_lib_one / ".ipfs").symlink_to(host.node.repo)
        frontend = Frontend(bed, found)
        try:
            frontend.start(drivers=False)
            yield GenuineOne(frontend)
        finally:
            frontend.stop()


def doctor(one: GenuineOne) -> tuple[int, dict[str, Any]]:
    bed = one.frontend.bed
    code, out, err = one_ipfs(bed, one, "doctor", "--api", bed.frontend.api, "--json")
    assert out, err
    return code, json.loads(out)


def restart_named(out: str) -> set[str]:
    """The nodes ``network init``/``join`` says to restart (in the order oned lists its hosts)."""
    line = next(line for line in out.splitlines() if line.startswith("Restart the Kubo daemon of "))
    return set(line.removeprefix("Restart the Kubo daemon of ").partition(":")[0].split(", "))


def test_doctor_on_a_cloud_without_one_ipfs_says_what_to_do(fresh: GenuineOne) -> None:
    for node in fresh.frontend.bed.nodes:
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


def test_install_network_init_and_join_bring_doctor_to_green_and_a_vm_deploys(fresh: GenuineOne) -> None:
    one, bed = fresh, fresh.frontend.bed

    code, out, err = one_ipfs(bed, one, "install")
    assert code == 0, err
    assert "onehost sync" in out
    one.frontend.restart()
    code, out, err = one_ipfs(bed, one, "network", "init", "--hosts", "h1")
    assert code == 0, err
    assert restart_named(out) == {"frontend", "h1"}
    code, out, err = one_ipfs(bed, one, "network", "join", "h2")
    assert code == 0, err
    assert restart_named(out) == {"frontend", "h1", "h2"}
    code, out, err = one_ipfs(bed, one, "network", "status", "--api", bed.frontend.api, "--json")
    assert code == 1, err  # every daemon is still down
    assert {row["node"]: row["restart_pending"] for row in json.loads(out)} == {
        "frontend": True,
        "h1": True,
        "h2": True,
    }
    for node in bed.nodes:
        bed.start_node(node)
    one.onehost_sync()
    code, report = doctor(one)

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
    assert sha256(disk_path(bed, one, vm).read_bytes()) == sha256(data)


def test_systemd_unit_on_nodes_that_systemd_does_not_run_fails_per_node_and_writes_no_unit(
    fresh: GenuineOne,
) -> None:
    """The bed's nodes are a machine without a running systemd (a systemctl binary may still be there)."""
    bed = fresh.frontend.bed
    code, _, err = one_ipfs(bed, fresh, "install")
    assert code == 0, err

    code, out, err = one_ipfs(
        bed, fresh, "network", "init", "--hosts", "h1,h2", "--systemd-unit", "--unit", "one-ipfs-bed-test"
    )

    assert code == 1, err
    rows = {line.split()[1]: line for line in out.splitlines() if line.startswith("│")}
    for node in ("frontend", "h1", "h2"):
        assert "failed (systemd does not run here" in rows[node]
    assert not os.path.exists("/etc/systemd/system/one-ipfs-bed-test.service")
