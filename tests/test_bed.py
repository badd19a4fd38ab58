"""The test bed is the datacenter it stands for: a private IPFS network, sshd per host, clean teardown."""

from __future__ import annotations

import hashlib
import io
import ipaddress
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import pytest

from one_ipfs.errors import HostError, IpfsError
from one_ipfs.ipfs.network import generate_swarm_key
from one_ipfs.ipfs.rpc import ImportSettings
from testbed import cluster, system
from testbed.bed import REPO, Bed, Layout, clear
from testbed.kubo import KUBO, Node
from tests.conftest import _layout
from tests.support.beds import fresh_layout

pytestmark = pytest.mark.bed

BED_NETWORK = ipaddress.ip_network("198.18.0.0/24")
LOOPBACK = ipaddress.ip_network("127.0.0.0/8")
# A second bed beside the session's: its own names, the upper half of 198.18.0.0/24, other frontend ports.
SECOND = Layout(
    prefix="ot",
    frontend_address="198.18.0.129",
    prefix_length=25,
    extra_offset=100,
    frontend_api_port=5101,
    frontend_gateway_port=8180,
)


def random_file(size: int) -> tuple[bytes, str]:
    data = os.urandom(size)
    return data, hashlib.sha256(data).hexdigest()


def ledger_received(bed: Bed, node: Node, peer: Node) -> int:
    """Bytes ``node`` received over bitswap from ``peer``."""
    host = bed.host(node.name)
    result = bed.host_run(
        host, [KUBO, "bitswap", "ledger", "--enc=json", peer.peer_id], env={"IPFS_PATH": str(node.repo)}
    )
    return int(json.loads(result.stdout)["Recv"])


def listeners(ss_output: str, ports: set[int]) -> list[str]:
    """Local addresses of the listening sockets on ``ports`` in ``ss -ltn`` output."""
    found = []
    for line in ss_output.splitlines()[1:]:
        local = line.split()[3]
        address, _, port = local.rpartition(":")
        if int(port) in ports:
            found.append(address.strip("[]"))
    return found


def peer_addresses(
    ss_output: str, pid: int | None = None
) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Remote addresses of the TCP connections in ``ss -tn[p]`` output (only ``pid``'s, if given)."""
    found = []
    for line in ss_output.splitlines()[1:]:
        if pid is not None and f"pid={pid}," not in line:
            continue
        address = line.split()[4].rpartition(":")[0].strip("[]")
        found.append(ipaddress.ip_address(address.removeprefix("::ffff:")))
    return found


def test_file_added_on_the_frontend_is_fetched_by_a_host_over_bitswap(bed: Bed) -> None:
    data, digest = random_file(4 << 20)
    added = bed.frontend.client().add(io.BytesIO(data), settings=ImportSettings())
    h3 = bed.host("h3")
    received_before = ledger_received(bed, h3.node, bed.frontend)

    fetched = hashlib.sha256()
    for piece in h3.node.client().cat(added.cid, timeout=60):
        fetched.update(piece)

    assert fetched.hexdigest() == digest
    assert ledger_received(bed, h3.node, bed.frontend) - received_before >= len(data)


def connect_within(node: Node, address: str, seconds: float) -> None:
    """Connect, retrying while a new namespace's link settles: a member must get in, if not at once."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            node.client().swarm_connect(address)
            return
        except IpfsError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def test_a_node_without_the_swarm_key_can_neither_connect_nor_fetch(bed: Bed) -> None:
    data, digest = random_file(1 << 20)
    cid = bed.frontend.client().add(io.BytesIO(data), settings=ImportSettings()).cid
    member = bed.add_node("x1")
    outsider = bed.add_node("x2", swarm_key=generate_swarm_key())
    try:
        # The same plumbing with the bed's key works: the outsider fails because of its key alone.
        connect_within(member, bed.frontend.multiaddr, seconds=60)
        assert hashlib.sha256(b"".join(member.client().cat(cid, timeout=30))).hexdigest() == digest

        with pytest.raises(IpfsError):
            outsider.client().swarm_connect(bed.frontend.multiaddr)
        with pytest.raises(IpfsError):
            b"".join(outsider.client().cat(cid, timeout=5))
        assert outsider.peer_id not in {peer for peer, _ in bed.frontend.client().swarm_peers()}
        assert outsider.client().swarm_peers() == []
    finally:
        bed.remove_node(outsider)
        bed.remove_node(member)


def test_rpc_api_and_gateway_listen_on_loopback_only_in_every_namespace(bed: Bed) -> None:
    for host in bed.hosts:
        inside = listeners(bed.host_run(host, ["ss", "-ltn"]).stdout.decode(), {5001, 8080})
        assert sorted(inside) == ["127.0.0.1", "127.0.0.1"], host.name
        for port in (5001, 8080):
            with pytest.raises(ConnectionRefusedError):
                socket.create_connection((host.address, port), timeout=5).close()
    api = bed.layout.frontend_api_port
    frontend = listeners(
        subprocess.run(["ss", "-ltn"], capture_output=True, check=True, text=True).stdout, {api}
    )
    assert frontend == ["127.0.0.1"]
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((bed.layout.frontend_address, api), timeout=5).close()


def test_no_node_holds_a_connection_outside_the_bed(bed: Bed) -> None:
    for node in bed.nodes:
        swarm = node.client().swarm_peers()
        assert {peer for peer, _ in swarm} >= {n.peer_id for n in bed.nodes if n is not node}, node.name
        for _, address in swarm:
            assert ipaddress.ip_address(address.split("/")[2]) in BED_NETWORK, (node.name, address)
    for host in bed.hosts:
        remote = peer_addresses(bed.host_run(host, ["ss", "-tn"]).stdout.decode())
        assert remote, host.name
        assert all(a in BED_NETWORK or a in LOOPBACK for a in remote), (host.name, remote)
    ss = subprocess.run(["ss", "-tnp"], capture_output=True, check=True, text=True).stdout
    remote = peer_addresses(ss, bed.daemon_pid(bed.frontend))
    assert len(remote) >= len(bed.hosts)
    assert all(a in BED_NETWORK or a in LOOPBACK for a in remote), remote


def test_ipns_name_published_on_one_host_resolves_on_another(bed: Bed) -> None:
    h1, h3 = bed.host("h1").node, bed.host("h3").node
    cid = h1.client().add(io.BytesIO(os.urandom(4096)), settings=ImportSettings()).cid

    name = h1.client().name_publish(f"/ipfs/{cid}")

    assert h3.client().name_resolve(name, timeout=30) == f"/ipfs/{cid}"


def test_ssh_to_each_host_sees_that_hosts_own_var_lib_one_and_var_tmp_one(bed: Bed) -> None:
    for host in bed.hosts:
        for folder in (host.var_lib_one, host.var_tmp_one):
            (folder / "whoami").write_text(f"{host.name}:{folder.name}\n")
    try:
        for host in bed.hosts:
            result = bed.ssh(host, ["sh", "-c", "id -un; cat /var/lib/one/whoami /var/tmp/one/whoami; pwd"])
            assert result.returncode == 0, result.stderr
            assert result.stdout.decode().split() == [
                "oneadmin",
                f"{host.name}:var-lib-one",
                f"{host.name}:var-tmp-one",
                "/var/lib/one",
            ]
        as_root = bed.ssh(bed.hosts[0], ["cat", "/var/lib/one/whoami"], user="root")
        assert as_root.stdout.decode() == "h1:var-lib-one\n", as_root.stderr
        on_frontend = bed.frontend_command(["ls", "-A", "/var/lib/one"])
        assert on_frontend.returncode == 0
        assert "whoami" not in on_frontend.stdout.decode().split()
        assert not Path("/var/lib/one/whoami").exists()
    finally:
        for host in bed.hosts:
            for folder in (host.var_lib_one, host.var_tmp_one):
                (folder / "whoami").unlink()


def test_frontend_command_runs_as_oneadmin_in_the_frontends_var_lib_one(bed: Bed) -> None:
    result = bed.frontend_command(["sh", "-c", "id -un; pwd; cat"], env={"EXTRA": "1"}, input=b"stdin\n")

    assert result.stdout.decode().split() == ["oneadmin", "/var/lib/one", "stdin"]
    config = (bed.root / "frontend" / "var-lib-one" / ".ssh" / "config").read_text()
    assert f"Host h3\n    HostName {bed.host('h3').address}\n" in config


def test_rate_limit_applies_to_both_ends_of_a_link(bed: Bed) -> None:
    h2, prefix = bed.host("h2"), bed.layout.prefix

    def qdiscs() -> list[str]:
        return [
            system.run(["tc", "qdisc", "show", "dev", f"{h2.netns}a", "root"]),
            bed.host_run(h2, ["tc", "qdisc", "show", "dev", f"{h2.netns}b", "root"]).stdout.decode(),
            system.run(["tc", "qdisc", "show", "dev", f"{prefix}-fea", "root"]),
            system.run(["tc", "qdisc", "show", "dev", f"{prefix}-feb", "root"]),
        ]

    bed.set_rate(h2, 100)
    bed.set_rate("frontend", 100)
    try:
        assert all("tbf" in q and "rate 100Mbit" in q for q in qdiscs())
    finally:
        bed.set_rate(h2, None)
        bed.set_rate("frontend", None)
    assert not any("tbf" in q for q in qdiscs())


def test_a_stopped_node_leaves_the_swarm_and_rejoins_when_started(bed: Bed) -> None:
    h2 = bed.host("h2").node
    bed.stop_node(h2)
    try:
        assert bed.daemon_pid(h2) is None
        with pytest.raises(IpfsError):
            h2.client(timeout=2).id()
    finally:
        bed.start_node(h2)
    assert h2.peer_id in {peer for peer, _ in bed.frontend.client().swarm_peers()}


def leftovers(
    layout: Layout, root: Path, processes: list[system.Process], namespaces: list[str]
) -> list[str]:
    """Everything of a bed that is still there after its teardown."""
    found = [f"netns {n}" for n in system.netns_list(layout.prefix)]
    found += [f"link {n}" for n in system.links(layout.prefix)]
    found += [f"process {p.name}" for p in processes if p.alive()]
    found += [f"marked process {p.pid}" for p in system.marked_processes(str(root))]
    for identity in namespaces:
        found += [f"process {p.pid} in {identity}" for p in system.processes_in_namespace("mnt", identity)]
    mounts = Path("/proc/self/mountinfo").read_text()
    found += [
        f"mount {line}" for line in mounts.splitlines() if f"/{layout.prefix}-" in line or str(root) in line
    ]
    return found


def test_a_bed_whose_network_would_answer_for_a_running_beds_addresses_is_refused_and_leaves_nothing(
    bed: Bed,
) -> None:
    """A bed at the running one's address with a longer prefix (as 198.18.0.1/27 under the default /24) would
    take the running bed's routes: CI's bed once never connected beside a developer's so left up."""
    clashing = Layout(
        prefix="oc",
        frontend_address=bed.layout.frontend_address,
        prefix_length=bed.layout.prefix_length + 1,
        frontend_api_port=SECOND.frontend_api_port + 7,
        frontend_gateway_port=SECOND.frontend_gateway_port + 7,
    )
    root = bed.root / "clashing"

    with pytest.raises(HostError, match=r"^test bed: .*another bed is up there"):
        Bed.up(hosts=1, root=root, layout=clashing)

    assert leftovers(clashing, root, [], []) == []
    assert {peer for peer, _ in bed.frontend.client().swarm_peers()} >= {h.node.peer_id for h in bed.hosts}


def test_teardown_leaves_no_namespace_process_mount_or_link(bed: Bed) -> None:
    root = bed.root / "second"
    crashed = Bed.up(hosts=1, root=root, layout=SECOND)
    first = list(crashed._processes.values())
    crashed.detach()  # as if its process had been killed: only state.json and the markers remain
    again = Bed.up(hosts=1, root=root, layout=SECOND)  # clears what the "crashed" bed left
    assert not any(p.alive() for p in first)
    processes = list(again._processes.values())
    namespaces = list(again._namespaces.values())
    assert again.ssh(again.hosts[0], ["true"]).returncode == 0
    assert leftovers(SECOND, root, processes, namespaces) != []  # the check sees a running bed

    again.down()

    assert leftovers(SECOND, root, processes, namespaces) == []
    # The session's bed is untouched.
    assert {peer for peer, _ in bed.frontend.client().swarm_peers()} >= {h.node.peer_id for h in bed.hosts}


def test_a_cluster_serves_rest_on_the_frontends_loopback_only_dials_no_one_outside_and_goes_with_the_bed(
    bed: Bed,
) -> None:
    layout = fresh_layout(_layout())
    beside = Bed.up(hosts=2, root=layout.root, layout=layout)
    try:
        api = beside.start_cluster(beside.hosts)
        rest = int(api.rsplit(":", 1)[1])
        ports = {rest, cluster.REST_PORT, cluster.SWARM_PORT}
        root_ss = subprocess.run(["ss", "-ltn"], capture_output=True, check=True, text=True).stdout
        assert listeners(root_ss, ports) == ["127.0.0.1"]
        peer_ns = layout.netns("fc")
        assert system.run(["ip", "-n", peer_ns, "route", "show", "default"]).strip() == ""
        inside = system.run(["ip", "netns", "exec", peer_ns, "ss", "-ltn"])
        assert sorted(listeners(inside, ports)) == ["127.0.0.1", layout.address(cluster.FRONTEND_OFFSET)]
        for host in beside.hosts:
            assert listeners(beside.host_run(host, ["ss", "-ltn"]).stdout.decode(), ports) == [host.address]
        connected = [system.run(["ip", "netns", "exec", peer_ns, "ss", "-tn"])]
        connected += [beside.host_run(host, ["ss", "-tn"]).stdout.decode() for host in beside.hosts]
        remote = [address for ss in connected for address in peer_addresses(ss)]
        assert remote
        assert all(a in BED_NETWORK or a in LOOPBACK for a in remote), remote
        processes = list(beside._processes.values())
        assert {p.name for p in processes} >= {"frontend/cluster", "h1/cluster", "h2/cluster"}
    finally:
        beside.down()
    assert leftovers(layout, layout.root, processes, []) == []
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", rest), timeout=5).close()


def test_sigterm_tears_the_bed_down(bed: Bed) -> None:
    root = bed.root / "second"
    script = (
        "import faulthandler, signal, sys; from pathlib import Path; from testbed.bed import Bed, Layout\n"
        "faulthandler.register(signal.SIGUSR1, all_threads=True)\n"
        f"bed = Bed.up(hosts=1, root=Path({str(root)!r}), layout=Layout(**{asdict(SECOND)!r}))\n"
        "print('up', flush=True)\n"
        "sys.stdin.read()\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "up\n"
        state = json.loads((root / "state.json").read_text())
        processes = [system.Process(**fields) for fields in state["processes"].values()]
        namespaces = list(state["namespaces"].values())

        child.send_signal(signal.SIGTERM)
        try:
            status = child.wait(timeout=180)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the bed did not go down within 180 s of SIGTERM:\n{where_stuck(child.pid)}")
        assert status == 128 + signal.SIGTERM
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert leftovers(SECOND, root, processes, namespaces) == []


def where_stuck(pid: int) -> str:
    """What a process and its descendants are waiting for: the kernel's view of each thread (state, wchan,
    stack) and, on stderr, Python's (the child registered faulthandler on SIGUSR1)."""
    os.kill(pid, signal.SIGUSR1)
    time.sleep(1)
    lines = []
    pending = [pid]
    while pending:
        process = pending.pop()
        proc = Path(f"/proc/{process}")
        try:
            command = (proc / "cmdline").read_bytes().replace(bytes(1), b" ").decode()
            lines.append(f"{process}: {command[:200]}")
            for task in sorted((proc / "task").iterdir()):
                state = (task / "stat").read_text().rsplit(")", 1)[1].split()[0]
                stack = (task / "stack").read_text().strip().replace("\n", " < ")
                lines.append(f"  thread {task.name} {state} {(task / 'wchan').read_text()}: {stack}")
                pending += [int(c) for c in (task / "children").read_text().split()]
        except OSError as error:
            lines.append(f"  gone: {error}")
    return "\n".join(lines)


def checkout_in(folder: Path) -> Path:
    """This checkout's code copied into ``folder`` with a venv of its own, as ``git clone`` and ``make setup``
    leave one (the bed needs no package beyond the standard library); Kubo stays this checkout's."""
    for part in ("src", "testbed"):
        shutil.copytree(REPO / part, folder / part, ignore=shutil.ignore_patterns("__pycache__"))
    (folder / ".cache").symlink_to(KUBO.parents[2])
    venv = folder / ".venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    site = Path(sysconfig.get_path("purelib", vars={"base": str(venv), "platbase": str(venv)}))
    (site / "one-ipfs.pth").write_text(f"{folder / 'src'}\n{folder}\n")
    return folder


@pytest.mark.parametrize("place", ["inside", "itself"])
def test_a_bed_comes_up_from_a_checkout_in_a_private_folder_and_oneadmin_runs_its_python(place: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("the test bed needs root (network namespaces, mounts, sshd); run the tests as root")
    private = Path(tempfile.mkdtemp(prefix="one-ipfs-private-"))  # mode 0700, as `mktemp -d` makes
    checkout = checkout_in(private / "one-ipfs" if place == "inside" else private)
    layout = fresh_layout(_layout())
    script = (
        "import sys; from testbed.bed import Bed, Layout\n"
        f"layout = Layout(**{asdict(layout)!r})\n"
        "with Bed.up(hosts=1, root=layout.root, layout=layout) as bed:\n"
        "    done = bed.frontend_command([sys.executable, '-c', sys.argv[1]])\n"
        "    print(done.returncode, done.stdout.decode().strip(), done.stderr.decode().strip())\n"
    )
    who = (
        "import os, pwd, sys, one_ipfs; "
        "print(pwd.getpwuid(os.getuid()).pw_name, sys.prefix, one_ipfs.__file__)"
    )
    try:
        assert private.stat().st_mode & 0o777 == 0o700
        up = subprocess.run(
            [checkout / ".venv" / "bin" / "python", "-c", script, who],
            cwd=checkout,
            capture_output=True,
            text=True,
            timeout=300,
        )

        assert up.returncode == 0, up.stderr
        assert up.stdout.split() == [
            "0",
            "oneadmin",
            str(checkout / ".venv"),
            str(checkout / "src" / "one_ipfs" / "__init__.py"),
        ]
    finally:
        clear(checkout / layout.root.name, layout)
        shutil.rmtree(private)
