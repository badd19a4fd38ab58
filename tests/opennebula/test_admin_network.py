"""From a cloud that has never seen one-ipfs to its first VM, under genuine oned on a bed of its own.

oned runs without the drivers, its two hosts added and MONITORED; the bed's Kubo nodes start as an admin finds
them: repositories that know nothing of each other (no swarm key, no peering; like every bed node, never
dialling anything public) with their daemons stopped. The admin then does what docs/install.md says:
``one-ipfs install``, a restart of oned, ``network init`` and ``join``, the daemons started, ``onehost sync``,
``doctor``, and the first image and VM; then doctor finds each fault an admin may meet next on its node
(another swarm key, python3 missing, a stopped daemon, an open RPC API, a pending restart, a locked API). The
bed sits in the last /28 of the session bed's network (a more specific route, so both run side by side) with
frontend ports of its own. Run on the current version only: what ``install`` writes into each version's
oned.conf every genuine cloud's start proves (docs/testing.md).
"""

from __future__ import annotations

import io
import json
import os
import pwd
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from one_ipfs.ipfs.network import generate_swarm_key
from one_ipfs.ipfs.rpc import ImportSettings
from testbed.bed import Bed
from testbed.genuine import VERSIONS, Frontend, GenuineOne, Unavailable, installation
from testbed.kubo import Node
from testbed.system import ONEADMIN
from tests.conftest import GENUINE_RUNS, _layout
from tests.opennebula.test_admin_images import one_ipfs
from tests.support.beds import fresh_layout
from tests.support.datastores import ipfs_datastore_template
from tests.support.images import disk_bytes, sha256
from tests.support.nodes import SECRET_FILE, locked_apis
from tests.support.vms import disk_path

pytestmark = [pytest.mark.bed, pytest.mark.opennebula]


def chown_tree(top: Path, uid: int, gid: int) -> None:
    """Lend a bed node's repository to oneadmin, whose Kubo it is on a real host (/var/lib/one/.ipfs)."""
    for folder, _, files in os.walk(top):
        os.chown(folder, uid, gid)
        for name in files:
            os.chown(Path(folder) / name, uid, gid)


@pytest.fixture(scope="module", params=VERSIONS[:1])
def fresh(request: pytest.FixtureRequest, admin_python: Path) -> Iterator[GenuineOne]:
    """genuine oned of the current version without the drivers, on a bed of frontend, h1 and h2; the admin
    has installed the wheel (``admin_python``'s venv) but not run ``one-ipfs install`` yet."""
    if os.geteuid() != 0:
        pytest.skip("the test bed needs root (network namespaces, mounts, sshd); run the tests as root")
    try:
        found = installation(request.param)
    except Unavailable as missing:
        GENUINE_RUNS.setdefault(request.param, f"not run: {missing}")
        pytest.skip(f"genuine OpenNebula {request.param} not run: {missing}")
    layout = fresh_layout(_layout())
    user = pwd.getpwnam(ONEADMIN)
    with Bed.up(hosts=2, root=layout.root, layout=layout, plain=True) as bed:
        for node in bed.nodes:
            chown_tree(node.repo, user.pw_uid, user.pw_gid)
        (bed.frontend_var_lib_one / ".ipfs").symlink_to(bed.frontend.repo)
        for host in bed.hosts:
            (host.var_lib_one / ".ipfs").symlink_to(host.node.repo)
        frontend = Frontend(bed, found, str(admin_python))
        try:
            frontend.start(drivers=False)
            yield GenuineOne(frontend)
        finally:
            frontend.stop()


def doctor(one: GenuineOne, *args: str) -> tuple[int, dict[str, Any]]:
    """``one-ipfs doctor --json`` on the hosts oned lists."""
    bed = one.frontend.bed
    code, out, err = one_ipfs(one, "doctor", "--api", bed.frontend.api, "--json", *args)
    assert out, err
    return code, json.loads(out)


def found(report: dict[str, Any]) -> dict[tuple[str, str], dict[str, str]]:
    """Each problem of a doctor report, by node and check."""
    return {(p["node"], p["check"]): p for p in report["problems"]}


def restart_named(out: str) -> set[str]:
    """The nodes ``network init``/``join`` says to restart (in the order oned lists its hosts)."""
    line = next(line for line in out.splitlines() if line.startswith("Restart the Kubo daemon of "))
    return set(line.removeprefix("Restart the Kubo daemon of ").partition(":")[0].split(", "))


def configurations(out: str) -> dict[str, str]:
    """What ``network init``/``join`` says it did to each node's configuration, by node."""
    return {row[1]: row[3] for row in (line.split() for line in out.splitlines()) if row[:1] == ["│"]}


def peer_ids(node: Node) -> set[str]:
    """Whom a node's Kubo peers with, as its repository's config says (``Peering.Peers``)."""
    return {peer["ID"] for peer in json.loads((node.repo / "config").read_text())["Peering"]["Peers"]}


def test_doctor_on_a_cloud_without_one_ipfs_says_what_to_do(fresh: GenuineOne) -> None:
    for node in fresh.frontend.bed.nodes:
        config = json.loads((node.repo / "config").read_text())
        assert not (node.repo / "swarm.key").exists()
        assert config["Peering"]["Peers"] == []
        assert config["Bootstrap"] == []
        assert config["Discovery"]["MDNS"]["Enabled"] is False

    code, report = doctor(fresh)

    assert code == 1
    problems = set(found(report))
    assert ("frontend", "drivers") in problems
    assert {("frontend", "daemon"), ("h1", "daemon"), ("h2", "daemon")} <= problems
    assert {("frontend", "private"), ("h1", "private"), ("h2", "private")} <= problems


def test_install_network_init_and_join_bring_doctor_to_green_and_a_vm_deploys(fresh: GenuineOne) -> None:
    one, bed = fresh, fresh.frontend.bed

    code, out, err = one_ipfs(one, "install")
    assert code == 0, err
    assert "onehost sync" in out
    defaults = (one.frontend.remotes / "etc" / "datastore" / "ipfs" / "ipfs.conf").read_text()
    assert f'ONE_IPFS_PYTHON="{one.frontend.python}"' in defaults  # the wheel's venv, not the checkout
    one.frontend.restart()
    code, out, err = one_ipfs(one, "network", "init", "--hosts", "h1")
    assert code == 0, err
    assert restart_named(out) == {"frontend", "h1"}
    code, out, err = one_ipfs(one, "network", "join", "h2")
    assert code == 0, err
    assert restart_named(out) == {"frontend", "h1", "h2"}
    code, out, err = one_ipfs(one, "network", "status", "--api", bed.frontend.api, "--json")
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

    assert (report["problems"], code) == ([], 0)
    assert set(report["nodes"]) == {"frontend", "h1", "h2"}
    key = (bed.frontend.repo / "swarm.key").read_bytes()
    assert key.decode().split()[-1] not in json.dumps(report)
    for node in bed.nodes:
        assert (node.repo / "swarm.key").read_bytes() == key
        assert peer_ids(node) == {o.peer_id for o in bed.nodes if o is not node}
    code, out, err = one_ipfs(one, "network", "init", "--hosts", "h1")  # the first command, once more
    assert code == 0, err
    assert configurations(out) == {"frontend": "unchanged", "h1": "unchanged"}
    assert "Restart the Kubo daemon" not in out
    assert peer_ids(bed.frontend) == {bed.host("h1").node.peer_id, bed.host("h2").node.peer_id}
    ds = one.datastore_create(ipfs_datastore_template(bed, "ipfs"))
    data = disk_bytes(4 << 20, seed=61)
    cid = bed.frontend.client().add(io.BytesIO(data), settings=ImportSettings()).cid
    image = one.image_create(ds, name="first", path=f"/ipfs/{cid}")
    vm = one.vm_deploy([image], "h2")
    assert sha256(disk_path(bed, one, vm).read_bytes()) == sha256(data)


def test_doctor_names_each_broken_node_and_its_fix_until_the_cloud_is_green_again(fresh: GenuineOne) -> None:
    """After the first VM (the test above): one fault after another on the nodes of the hosts oned lists,
    each found on its node alone, and doctor green once it is mended."""
    one, bed = fresh, fresh.frontend.bed
    h1, h2 = bed.host("h1"), bed.host("h2")
    code, out, err = one_ipfs(one, "network", "status", "--api", bed.frontend.api, "--json")
    assert code == 0, err
    rows = {row["node"]: row for row in json.loads(out)}
    for node in bed.nodes:
        assert (rows[node.name]["peer_id"], rows[node.name]["private"]) == (node.peer_id, "yes")
        assert rows[node.name]["peers"] >= 2

    key, bashrc = h1.node.repo / "swarm.key", h2.var_lib_one / ".bashrc"
    kept_key, kept_bashrc = key.read_bytes(), bashrc.read_bytes()
    key.write_bytes(generate_swarm_key())
    bashrc.write_text("PATH=/nonexistent\n")
    try:
        code, report = doctor(one)
    finally:
        key.write_bytes(kept_key)
        bashrc.write_bytes(kept_bashrc)
    assert code == 1
    problems = found(report)
    assert set(problems) == {("h1", "private"), ("h2", "python3")}
    assert "another swarm key" in problems["h1", "private"]["what"]
    assert problems["h2", "python3"]["fix"] == "install python3 (>= 3.9) on h2"

    bed.stop_node(h1.node)
    try:
        code, report = doctor(one)
    finally:
        bed.start_node(h1.node)
    assert code == 1
    assert set(found(report)) == {("h1", "daemon")}
    assert "start the Kubo daemon" in found(report)["h1", "daemon"]["fix"]

    config_path = h2.node.repo / "config"
    kept_config = config_path.read_bytes()
    config = json.loads(kept_config)
    config["Addresses"]["API"] = "/ip4/0.0.0.0/tcp/5001"
    bed.stop_node(h2.node)
    config_path.write_text(json.dumps(config, indent=2))
    bed.start_node(h2.node)
    try:
        code, report = doctor(one)
    finally:
        bed.stop_node(h2.node)
        config_path.write_bytes(kept_config)
        bed.start_node(h2.node)
    assert code == 1
    assert set(found(report)) == {("h2", "rpc")}
    assert "/ip4/0.0.0.0/tcp/5001" in found(report)["h2", "rpc"]["what"]

    config = json.loads(kept_config)
    config["Peering"]["Peers"] = config["Peering"]["Peers"][:1]
    config_path.write_text(json.dumps(config, indent=2))
    code, out, err = one_ipfs(one, "network", "init", "--hosts", "h1,h2")
    assert code == 0, err
    named = restart_named(out)
    assert named == {"h2"}  # the frontend's peers are the members already, h1's too
    code, report = doctor(one)
    assert code == 1
    assert set(found(report)) == {(name, "restart") for name in named}
    for node in bed.nodes:
        if node.name in named:
            bed.stop_node(node)
            bed.start_node(node)
    code, report = doctor(one)
    assert (report["problems"], code) == ([], 0)

    secret = f"bearer:{secrets.token_hex(16)}"
    with locked_apis(bed, secret):
        code, report = doctor(one)
        assert code == 1
        assert set(found(report)) == {(node.name, "auth") for node in bed.nodes}
        assert "refused no secret" in report["problems"][0]["what"]
        code, out, err = one_ipfs(
            one,
            "doctor",
            "--api",
            bed.frontend.api,
            "--api-auth-file",
            SECRET_FILE,
            "--host-api-auth-file",
            SECRET_FILE,
            "--json",
        )
    assert json.loads(out)["problems"] == []
    assert code == 0
    assert secret.split(":")[1] not in out + err


def test_systemd_unit_on_nodes_that_systemd_does_not_run_fails_per_node_and_writes_no_unit(
    fresh: GenuineOne,
) -> None:
    """The bed's nodes are a machine without a running systemd (a systemctl binary may still be there)."""
    code, _, err = one_ipfs(fresh, "install")
    assert code == 0, err

    code, out, err = one_ipfs(
        fresh, "network", "init", "--hosts", "h1,h2", "--systemd-unit", "--unit", "one-ipfs-bed-test"
    )

    assert code == 1, err
    rows = {line.split()[1]: line for line in out.splitlines() if line.startswith("│")}
    for node in ("frontend", "h1", "h2"):
        assert "failed (systemd does not run here" in rows[node]
    assert not os.path.exists("/etc/systemd/system/one-ipfs-bed-test.service")
