"""The test bed: a frontend and N hypervisor hosts on one machine, with real Kubo nodes, sshd and namespaces.

Topology (default Layout, design.md section 7)::

    root namespace                                  bridge oibr0 (no address)
      frontend Kubo: RPC 127.0.0.1:5001,              |-- oi-feb ~ oi-fea  198.18.0.1/24   (root namespace)
        gateway 127.0.0.1:8080,                       |-- oi-h1a ~ oi-h1b  198.18.0.11/24  (netns oi-h1)
        swarm 198.18.0.1:4001                         |-- oi-h2a ~ oi-h2b  198.18.0.12/24  (netns oi-h2)
      frontend mount ns: /var/lib/one = BED/frontend/var-lib-one (drivers run there as oneadmin)
        and each private folder (mode 0700) on the way to the venv, its Python, the checkout or BED covered
        by a tmpfs that holds just the way on, for oneadmin
    netns oi-h<k> + own mount ns (/var/lib/one, /var/tmp/one = BED/h<k>/var-lib-one, var-tmp-one):
      Kubo (RPC 127.0.0.1:5001 in the netns, swarm 198.18.0.(10+k):4001), sshd on 198.18.0.(10+k):22

The frontend's address sits on a veth of its own rather than on the bridge, so that every link, the
frontend's included, is a veth pair that a token bucket on each end limits in both directions
(``set_rate``): what a node sends leaves through its inner end, what it receives through its bridge port.

Every node shares one swarm key and peers with every other. The bed's state is kept in BED/state.json, so
``python -m testbed status|down`` work from another process, and ``up`` first removes whatever a killed
run left (processes carrying the bed's marker, namespaces and links with the bed's prefix).
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import json
import os
import pwd
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

from one_ipfs.errors import HostError, StorageError
from one_ipfs.ipfs import cluster_peer, network
from one_ipfs.ipfs.rpc import authorization
from testbed import cluster, kubo, sshd, system
from testbed.forward import Forwarder
from testbed.kubo import Node
from testbed.system import (
    BASE_PATH,
    NETNS_DIR,
    ONEADMIN,
    ONEADMIN_HOME,
    Process,
    add_bridge,
    add_veth,
    ensure_oneadmin,
    links,
    marked_processes,
    may_traverse,
    namespace_id,
    netns_list,
    netns_processes,
    network_clash,
    port_free,
    processes_in_namespace,
    run,
    spawn,
    stop_processes,
)

REPO = Path(__file__).resolve().parent.parent
DEFAULT_ROOT = REPO / ".bed"
VAR_TMP_ONE = Path("/var/tmp/one")
BED_FILE = ".one-ipfs-bed"
"""Marks a folder as a bed root, the only kind of folder ``up`` empties."""
START_TIMEOUT = 60.0
FRONTEND_SSH_PORT = 2222
"""The frontend's sshd (``serve_frontend_ssh``): not 22, which the machine's own sshd may hold."""


@dataclass(frozen=True)
class Layout:
    """Names and addresses of one bed.

    The default is the layout the whole project assumes. Another one (its own prefix, a /25 inside
    198.18.0.0/24, other frontend ports) lets a second, small bed run beside the first.
    """

    prefix: str = "oi"
    frontend_address: str = "198.18.0.1"
    prefix_length: int = 24
    host_offset: int = 10
    """Host k gets the network's address + host_offset + k."""
    extra_offset: int = 200
    """Nodes added by ``add_node`` get the network's address + extra_offset + i."""
    frontend_api_port: int = kubo.API_PORT
    frontend_gateway_port: int = kubo.GATEWAY_PORT

    @classmethod
    def parse(cls, spec: str) -> Layout:
        """``prefix:address/length:api:gateway`` (``od:198.18.0.33/27:5401:8480``): a small bed beside the
        default one, as developers name it in ONE_IPFS_TEST_BED or ONE_IPFS_DEMO_BED to share the machine."""
        try:
            prefix, network, api, gateway = spec.split(":")
            address, length = network.split("/")
            ipaddress.ip_interface(network)
            return cls(
                prefix=prefix,
                frontend_address=address,
                prefix_length=int(length),
                extra_offset=20,
                frontend_api_port=int(api),
                frontend_gateway_port=int(gateway),
            )
        except ValueError:
            raise HostError(
                f"test bed: layout {spec!r} is not prefix:address/length:api:gateway "
                "(e.g. od:198.18.0.33/27:5401:8480)"
            ) from None

    @property
    def root(self) -> Path:
        """The folder of a bed of this layout: ``.bed`` for the default prefix, ``.bed-<prefix>`` beside it
        otherwise, so that two beds never empty each other's folder."""
        return DEFAULT_ROOT if self.prefix == Layout.prefix else DEFAULT_ROOT.parent / f".bed-{self.prefix}"

    @property
    def bridge(self) -> str:
        return f"{self.prefix}br0"

    def netns(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    @property
    def network(self) -> ipaddress.IPv4Network:
        """The bed's network, the frontend's address with its host bits cleared (198.18.0.64/27)."""
        return ipaddress.IPv4Network(f"{self.frontend_address}/{self.prefix_length}", strict=False)

    def address(self, offset: int) -> str:
        net = self.network
        address = net.network_address + offset
        if address not in net or address in (net.network_address, net.broadcast_address):
            raise HostError(f"test bed: offset {offset} falls outside {net}")
        return str(address)


@dataclass
class Host:
    """A hypervisor host: its network namespace, its own /var/lib/one and /var/tmp/one, its Kubo node.

    ``var_lib_one`` and ``var_tmp_one`` are the root namespace's paths of the folders the host sees at
    /var/lib/one and /var/tmp/one.
    """

    name: str
    address: str
    netns: str
    folder: Path
    var_lib_one: Path
    var_tmp_one: Path
    node: Node


class Bed:
    """A running bed. Build it with ``Bed.up()`` (or ``Bed.load()`` for one another process started)."""

    def __init__(self, root: Path, layout: Layout, swarm_key: bytes, rate_mbit: float | None) -> None:
        self.root = root
        self.layout = layout
        self.swarm_key = swarm_key
        self.rate_mbit = rate_mbit
        self.frontend = Node(
            name="frontend",
            repo=root / "frontend" / "ipfs",
            api=f"http://127.0.0.1:{layout.frontend_api_port}",
            gateway=f"http://127.0.0.1:{layout.frontend_gateway_port}",
            peer_id="",
            swarm_address=f"/ip4/{layout.frontend_address}/tcp/{kubo.SWARM_PORT}",
            netns=None,
        )
        self.hosts: list[Host] = []
        self.extras: list[Node] = []
        self._processes: dict[str, Process] = {}
        self._popens: dict[str, subprocess.Popen[bytes]] = {}
        self._namespaces: dict[str, str] = {}  # holder name -> mount namespace identity
        self._lock = threading.Lock()
        self._previous_handlers: dict[int, Any] = {}
        self._relays: list[Forwarder] = []
        """The frontend cluster peer's ways to its Kubo node and to the drivers (``run_cluster``), and a
        second frontend's APIs (``second_frontend_apis``)."""
        self._cluster_folders: dict[str, Path] = {}
        self._cluster_service = Path()
        self._cluster_api = ""

    # Bring-up -------------------------------------------------------------------------------------------

    @classmethod
    def up(
        cls,
        hosts: int = 3,
        rate_mbit: float | None = None,
        root: Path = DEFAULT_ROOT,
        layout: Layout = Layout(),
        *,
        plain: bool = False,
    ) -> Bed:
        """Start a frontend and ``hosts`` hosts, all connected; tear everything down again on any failure.

        ``plain`` leaves the nodes as an admin finds them before ``one-ipfs network init``: repositories that
        know nothing of each other (no swarm key, no peering; still no bootstrap or mDNS) and daemons
        stopped, since the bed's Kubo refuses to start without a swarm key (``start_node`` them later).
        Until ``down()`` (or ``detach()``), an exit of this process, Ctrl-C or SIGTERM also tears it down.
        """
        _require_root()
        if hosts < 1:
            raise HostError(f"test bed: at least one host is needed, not {hosts}")
        root = root.resolve()
        clear(root, layout)
        _prepare_root(root)
        bed = cls(root, layout, network.generate_swarm_key(), rate_mbit)
        bed._arm()
        try:
            bed._build(hosts, plain)
        except BaseException:
            bed.down()
            raise
        return bed

    def _build(self, count: int, plain: bool = False) -> None:
        user = ensure_oneadmin()
        layout = self.layout
        for port in (layout.frontend_api_port, layout.frontend_gateway_port):
            if not port_free("127.0.0.1", port):
                raise HostError(f"test bed: 127.0.0.1:{port} is in use; the frontend's Kubo node needs it")
        self.hosts = [self._describe_host(k) for k in range(1, count + 1)]
        clash = network_clash(
            layout.network, [layout.frontend_address, *(host.address for host in self.hosts)]
        )
        if clash is not None:
            raise HostError(
                f"test bed: {clash}: another bed is up there; give this one another layout "
                "(ONE_IPFS_TEST_BED) or take that one down"
            )
        self._save()
        self._create_repositories(plain)
        self._create_network()
        if self.rate_mbit is not None:
            targets: list[Host | str] = ["frontend", *self.hosts]
            for target in targets:
                self.set_rate(target, self.rate_mbit)
        for mountpoint in (ONEADMIN_HOME, VAR_TMP_ONE):
            mountpoint.mkdir(parents=True, exist_ok=True)
        self._start_frontend_namespace(user)
        self._start_sshds(user)
        if plain:
            return
        deadline = time.monotonic() + START_TIMEOUT
        nodes = self.nodes
        for node in nodes:
            self._start_daemon(node)
        for node in nodes:
            kubo.wait_ready(node, self._processes[f"{node.name}/kubo"], deadline)
        kubo.wait_connected(nodes, deadline)

    def _describe_host(self, k: int) -> Host:
        name = f"h{k}"
        folder = self.root / name
        address = self.layout.address(self.layout.host_offset + k)
        netns = self.layout.netns(name)
        node = Node(
            name=name,
            repo=folder / "ipfs",
            api=f"http://127.0.0.1:{kubo.API_PORT}",
            gateway=f"http://127.0.0.1:{kubo.GATEWAY_PORT}",
            peer_id="",
            swarm_address=f"/ip4/{address}/tcp/{kubo.SWARM_PORT}",
            netns=netns,
        )
        return Host(name, address, netns, folder, folder / "var-lib-one", folder / "var-tmp-one", node)

    def _create_repositories(self, plain: bool = False) -> None:
        nodes = self.nodes
        for node in nodes:
            node.repo.parent.mkdir(parents=True, exist_ok=True)
            node.peer_id = network.init_repository(kubo.KUBO, node.repo)
        for node in nodes:
            peers = tuple(network.Peer(o.peer_id, (o.swarm_address,)) for o in nodes if o is not node)
            network.configure_private_node(
                node.repo, self.swarm_key, self._settings(node, () if plain else peers)
            )
            if plain:
                (node.repo / "swarm.key").unlink()
        self._save()

    def _settings(self, node: Node, peers: tuple[network.Peer, ...]) -> network.NodeSettings:
        api, gateway = (
            (self.layout.frontend_api_port, self.layout.frontend_gateway_port)
            if node is self.frontend
            else (kubo.API_PORT, kubo.GATEWAY_PORT)
        )
        return network.NodeSettings(
            swarm_addresses=(node.swarm_address,),
            api_address=f"/ip4/127.0.0.1/tcp/{api}",
            gateway_address=f"/ip4/127.0.0.1/tcp/{gateway}",
            peers=peers,
        )

    def _create_network(self) -> None:
        layout = self.layout
        add_bridge(layout.bridge)
        frontend_link = f"{layout.frontend_address}/{layout.prefix_length}"
        add_veth(f"{layout.prefix}-feb", f"{layout.prefix}-fea", layout.bridge, None, frontend_link)
        for host in self.hosts:
            run(["ip", "netns", "add", host.netns])
            link = f"{host.address}/{layout.prefix_length}"
            add_veth(f"{host.netns}a", f"{host.netns}b", layout.bridge, host.netns, link)

    def _start_frontend_namespace(self, user: pwd.struct_passwd) -> None:
        folder = self.frontend_var_lib_one
        folder.mkdir(parents=True, exist_ok=True)
        os.chown(folder, user.pw_uid, user.pw_gid)
        self._start_holder("frontend", [], {ONEADMIN_HOME: folder})
        self._expose_interpreter(user)
        _check_driver_python(self, user)

    def _expose_interpreter(self, user: pwd.struct_passwd) -> None:
        """Let oneadmin reach this interpreter, the project and the bed inside the frontend's mount namespace.

        A Python in a private home (pyenv under /root, mode 0700), or a checkout in one or in a ``mktemp -d``
        folder, is out of oneadmin's reach, as it would be on a real frontend; there the admin installs
        one-ipfs somewhere readable. Here each folder on the way that oneadmin may not traverse is covered, in
        this namespace only, by a world-traversable tmpfs holding just the entries on the way (all of them
        for a needed folder itself). Each cover is built in a staging folder under /run, outside every folder
        it covers, and moved over its folder whole, the shallowest first.
        """
        needed = {Path(sys.base_prefix), Path(sys.prefix), REPO, self.root}
        covers: dict[Path, set[Path]] = {}
        for path in needed | {Path(os.path.realpath(p)) for p in needed}:
            for folder in _untraversable(path, user):
                real = folder.resolve()
                entries = folder.iterdir() if folder == path else [folder / path.relative_to(folder).parts[0]]
                covers.setdefault(real, set()).update(real / entry.name for entry in entries)
        enter = self._enter("frontend")
        with tempfile.TemporaryDirectory(prefix="one-ipfs-bed-", dir="/run") as stage:
            for number, folder in enumerate(sorted(covers, key=lambda f: len(f.parts))):
                cover = Path(stage) / str(number)
                cover.mkdir()
                run([*enter, "mount", "-t", "tmpfs", "-o", "mode=0755", "one-ipfs-bed", cover])
                for entry in sorted(covers[folder]):
                    slot = cover / entry.name
                    if entry.is_symlink():
                        run([*enter, "ln", "-s", os.readlink(entry), slot])
                        continue
                    run([*enter, "mkdir" if entry.is_dir() else "touch", slot])
                    run([*enter, "mount", "--rbind", entry, slot])
                run([*enter, "mount", "--move", cover, folder])

    def _start_sshds(self, user: pwd.struct_passwd) -> None:
        keys = []
        for host in self.hosts:
            for folder in (host.var_lib_one, host.var_tmp_one):
                folder.mkdir(parents=True, exist_ok=True)
                os.chown(folder, user.pw_uid, user.pw_gid)
            keys.append((host.name, host.address, sshd.host_key(host.folder)))
        client_key = sshd.setup_client(self.frontend_var_lib_one / ".ssh", user, keys)
        for host in self.hosts:
            sshd.authorize(host.var_lib_one, user, client_key)
            self._start_holder(
                host.name,
                ["ip", "netns", "exec", host.netns],
                {ONEADMIN_HOME: host.var_lib_one, VAR_TMP_ONE: host.var_tmp_one},
            )
            self._spawn_sshd(host)
        deadline = time.monotonic() + START_TIMEOUT
        for host in self.hosts:
            _wait_logged(
                host.folder / "sshd.log", "Server listening", self._processes[f"{host.name}/sshd"], deadline
            )

    def _spawn_sshd(self, host: Host) -> None:
        config = sshd.write_sshd_config(host.folder, host.address)
        self._spawn(
            f"{host.name}/sshd",
            [*self._enter(host.name), *sshd.sshd_command(config)],
            log=host.folder / "sshd.log",
            cwd=host.folder,
        )

    def _start_holder(self, name: str, prefix: list[str], binds: Mapping[Path, Path]) -> None:
        """A process that only holds a private mount namespace in which ``binds`` are mounted.

        Everything of that node (sshd, Kubo, the drivers) is started into this namespace with nsenter.
        """
        holder = f"{name}/namespace"
        self._spawn(
            holder,
            [*prefix, "unshare", "--mount", "--propagation", "private", "sleep", "infinity"],
            log=self.root / name / "namespace.log",
            cwd=self.root,
        )
        process = self._processes[holder]
        deadline = time.monotonic() + 10.0
        # unshare execs sleep only once the namespace is private: mount before that and the root one gets it.
        while _command_name(process.pid) != "sleep":
            if time.monotonic() > deadline or not process.alive():
                raise HostError(f"test bed: the mount namespace of {name} did not come up")
            time.sleep(0.01)
        identity = namespace_id(process.pid, "mnt")
        if identity is None or identity == namespace_id(os.getpid(), "mnt"):
            raise HostError(f"test bed: the mount namespace of {name} is not a namespace of its own")
        self._namespaces[holder] = identity
        self._save()
        for target, source in binds.items():
            run(["nsenter", "-t", str(process.pid), "-m", "mount", "--bind", source, target])

    def _enter(self, name: str) -> list[str]:
        """nsenter into the namespaces of ``name`` (``frontend``: its mount namespace; a host: both)."""
        pid = str(self._processes[f"{name}/namespace"].pid)
        return ["nsenter", "-t", pid, "-m"] if name == "frontend" else ["nsenter", "-t", pid, "-m", "-n"]

    def _start_daemon(self, node: Node) -> None:
        if node.netns is None:
            prefix = []
        elif f"{node.name}/namespace" in self._processes:
            prefix = self._enter(node.name)
        else:
            prefix = ["nsenter", f"--net={NETNS_DIR / node.netns}"]
        process, popen = kubo.start_daemon(node, prefix, str(self.root))
        self._track(f"{node.name}/kubo", process, popen)

    def _spawn(self, name: str, argv: Sequence[str | os.PathLike[str]], *, log: Path, cwd: Path) -> None:
        env = {"PATH": BASE_PATH, "LANG": "C.UTF-8"}
        process, popen = spawn(name, argv, log=log, env=env, marker=str(self.root), cwd=cwd)
        self._track(name, process, popen)

    def _track(self, name: str, process: Process, popen: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self._processes[name] = process
            self._popens[name] = popen
        self._save()

    # Using the bed --------------------------------------------------------------------------------------

    @property
    def frontend_var_lib_one(self) -> Path:
        """The folder the frontend's drivers see as /var/lib/one (its root-namespace path)."""
        return self.root / "frontend" / "var-lib-one"

    @property
    def nodes(self) -> list[Node]:
        """The frontend's node, then the hosts' (nodes added with ``add_node`` are in ``extras``)."""
        return [self.frontend, *(host.node for host in self.hosts)]

    def host(self, name: str) -> Host:
        for host in self.hosts:
            if host.name == name:
                return host
        raise HostError(f"test bed: no host named {name}")

    def frontend_command(
        self,
        argv: Sequence[str | os.PathLike[str]],
        user: str = ONEADMIN,
        *,
        env: Mapping[str, str] | None = None,
        input: bytes | None = None,
        check: bool = False,
        timeout: float | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run ``argv`` on the frontend as ``user``, where /var/lib/one is the frontend's folder.

        The environment is a login-like base (PATH, HOME, USER, LOGNAME, LANG) updated with ``env``;
        the working directory is /var/lib/one. Output is captured.
        """
        account = pwd.getpwnam(user)
        base = {"PATH": BASE_PATH, "HOME": account.pw_dir, "USER": user, "LOGNAME": user, "LANG": "C.UTF-8"}
        drop = (
            []
            if account.pw_uid == 0
            else ["setpriv", f"--reuid={account.pw_uid}", f"--regid={account.pw_gid}", "--init-groups", "--"]
        )
        command = [
            *self._enter("frontend"),
            f"--wd={ONEADMIN_HOME}",
            "--",
            *drop,
            *[os.fspath(a) for a in argv],
        ]
        return subprocess.run(
            command,
            env={**base, **(env or {})},
            input=input,
            capture_output=True,
            check=check,
            timeout=timeout,
        )

    def host_run(
        self,
        host: Host,
        argv: Sequence[str | os.PathLike[str]],
        *,
        env: Mapping[str, str] | None = None,
        input: bytes | None = None,
        check: bool = True,
        timeout: float | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        """Run ``argv`` as root on ``host``, inside its network and mount namespaces.

        The environment is PATH, HOME, LANG updated with ``env``; output is captured.
        """
        command = [*self._enter(host.name), "--wd=/", "--", *[os.fspath(a) for a in argv]]
        result = subprocess.run(
            command,
            env={"PATH": BASE_PATH, "HOME": "/root", "LANG": "C.UTF-8", **(env or {})},
            input=input,
            capture_output=True,
            check=False,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            reason = result.stderr.decode(errors="replace").strip() or f"exit status {result.returncode}"
            raise HostError(
                f"test bed: {shlex.join([os.fspath(a) for a in argv])} on {host.name} failed: {reason}"
            )
        return result

    def ssh(
        self,
        host: Host,
        argv: Sequence[str],
        user: str = ONEADMIN,
        *,
        input: bytes | None = None,
        timeout: float | None = None,
    ) -> subprocess.CompletedProcess[bytes]:
        """ssh from the frontend to ``host`` as ``user`` (the same account on both ends).

        oneadmin goes through its ``~/.ssh/config`` exactly as the drivers do (``ssh h1 ...``); another
        user gets the same key and known_hosts on the command line.
        """
        remote = shlex.join(argv)
        if user == ONEADMIN:
            command = ["ssh", host.name, remote]
        else:
            seen = ONEADMIN_HOME / ".ssh"
            command = [
                "ssh",
                "-i",
                str(seen / sshd.CLIENT_KEY),
                "-o",
                f"UserKnownHostsFile={seen / 'known_hosts'}",
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "BatchMode=yes",
                "-o",
                "ConnectTimeout=5",
                "-l",
                user,
                host.address,
                remote,
            ]
        return self.frontend_command(command, user=user, input=input, timeout=timeout)

    def start_service(
        self,
        name: str,
        argv: Sequence[str | os.PathLike[str]],
        *,
        env: Mapping[str, str],
        log: Path,
        user: str = ONEADMIN,
    ) -> None:
        """A long-lived process on the frontend (oned, a scheduler) as ``user`` in the frontend's mount
        namespace, started from /var/lib/one with ``env`` only; the bed stops it with everything else."""
        account = pwd.getpwnam(user)
        drop = ["setpriv", f"--reuid={account.pw_uid}", f"--regid={account.pw_gid}", "--init-groups", "--"]
        base = {"HOME": account.pw_dir, "USER": user, "LOGNAME": user, "LANG": "C.UTF-8"}
        process, popen = spawn(
            name,
            [*self._enter("frontend"), f"--wd={ONEADMIN_HOME}", "--", *drop, *argv],
            log=log,
            env={**base, **env},
            marker=str(self.root),
            cwd=self.root,
        )
        self._track(name, process, popen)

    def serve_frontend_ssh(self, name: str) -> None:
        """Let oneadmin ssh to the frontend as ``name``, from the frontend itself (and from the hosts once
        they have its ``~/.ssh``), as an OpenNebula install has it: oned names the frontend by its
        hostname in the transfers of stop, undeploy and resume, which its ssh-based TMs run over ssh."""
        user = pwd.getpwnam(ONEADMIN)
        folder = self.root / "frontend"
        address = self.layout.frontend_address
        ssh_dir = self.frontend_var_lib_one / ".ssh"
        public = sshd.host_key(folder)
        client = " ".join((ssh_dir / f"{sshd.CLIENT_KEY}.pub").read_text().split()[:2])
        sshd.authorize(self.frontend_var_lib_one, user, client)
        sshd.add_client_entry(ssh_dir, name, address, FRONTEND_SSH_PORT, public)
        config = sshd.write_sshd_config(folder, address, FRONTEND_SSH_PORT)
        self._spawn(
            "frontend/sshd",
            [*self._enter("frontend"), *sshd.sshd_command(config)],
            log=folder / "sshd.log",
            cwd=folder,
        )
        deadline = time.monotonic() + START_TIMEOUT
        _wait_logged(folder / "sshd.log", "Server listening", self._processes["frontend/sshd"], deadline)

    def stop_service(self, name: str) -> None:
        """Stop a process ``start_service`` started (SIGTERM, then SIGKILL after a grace period)."""
        self._stop(name)

    def service_alive(self, name: str) -> bool:
        process = self._processes.get(name)
        return process is not None and process.alive()

    def daemon_pid(self, node: Node) -> int | None:
        """The pid of a node's running Kubo daemon (None when it is stopped)."""
        process = self._processes.get(f"{node.name}/kubo")
        return process.pid if process is not None and process.alive() else None

    def stop_node(self, node: Node) -> None:
        """Stop a node's Kubo daemon (SIGTERM, as a service manager would)."""
        self._stop(f"{node.name}/kubo")

    def kill_node(self, node: Node) -> None:
        """Kill a node's Kubo daemon (SIGKILL, as a crash or the OOM killer would): no flush, no goodbye."""
        pid = self.daemon_pid(node)
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
        self._stop(f"{node.name}/kubo")

    def stop_sshd(self, host: Host) -> None:
        """Stop a host's sshd and the connections it serves (SIGTERM): no ssh session to it survives
        (a shared connection included) and new ones are refused."""
        sessions = [p for p in netns_processes(host.netns) if (_command_name(p.pid) or "").startswith("sshd")]
        self._stop(f"{host.name}/sshd")
        stop_processes(sessions)

    def start_sshd(self, host: Host) -> None:
        """Start a stopped host's sshd again and wait until it listens."""
        if f"{host.name}/sshd" in self._processes:
            raise HostError(f"test bed: the sshd of {host.name} is already running")
        log = host.folder / "sshd.log"
        seen = log.stat().st_size if log.exists() else 0
        self._spawn_sshd(host)
        process = self._processes[f"{host.name}/sshd"]
        _wait_logged(log, "Server listening", process, time.monotonic() + START_TIMEOUT, offset=seen)

    def partition(self, target: Host | Node | str) -> None:
        """Cut a node off the bed's network (its bridge port goes down): its peers and ssh sessions see
        nothing more from it, no reset and no error, as when a cable or a switch fails."""
        run(["ip", "link", "set", "dev", self._bridge_port(target), "down"])

    def heal(self, target: Host | Node | str) -> None:
        """Undo ``partition``: the node's link comes back; connections that did not give up resume."""
        run(["ip", "link", "set", "dev", self._bridge_port(target), "up"])

    def _bridge_port(self, target: Host | Node | str) -> str:
        name = target if isinstance(target, str) else target.name
        if name == "frontend":
            return f"{self.layout.prefix}-feb"
        return f"{self.host(name).netns}a"

    def _stop(self, name: str) -> None:
        with self._lock:
            process = self._processes.pop(name, None)
        if process is not None:
            stop_processes([process])
            self._forget(name)
        self._save()

    def start_node(self, node: Node, *, wait_peers: bool = True) -> None:
        """Start a stopped node again and wait until its RPC answers and it is connected to every bed node."""
        if f"{node.name}/kubo" in self._processes:
            raise HostError(f"test bed: the Kubo node of {node.name} is already running")
        self._start_daemon(node)
        deadline = time.monotonic() + START_TIMEOUT
        kubo.wait_ready(node, self._processes[f"{node.name}/kubo"], deadline)
        if wait_peers:
            kubo.wait_connected([n for n in self.nodes if f"{n.name}/kubo" in self._processes], deadline)

    def lock_apis(self, secret: str | None) -> None:
        """Make every bed node's RPC API require ``secret`` (Kubo's ``API.Authorizations`` AuthSecret, such as
        ``bearer:<token>``), or no secret again (None); the nodes restart. Their ``client()`` sends it."""

        def lock(node: Node, config: dict[str, Any]) -> None:
            if secret is None:
                config["API"].pop("Authorizations", None)
            else:
                config["API"]["Authorizations"] = {
                    "oneadmin": {"AuthSecret": secret, "AllowedPaths": ["/api/v0"]}
                }
            node.auth = None if secret is None else authorization(secret)

        self._restart_nodes(lock)

    def switch_off(self, features: Collection[str]) -> None:
        """Make every bed node run without Kubo's experimental ``features`` (names of
        ``kubo.EXPERIMENTAL``), and with the others on as ``one-ipfs network init`` sets them; the nodes
        restart. ``switch_off(())`` turns everything back on."""
        unknown = set(features) - set(kubo.EXPERIMENTAL)
        if unknown:
            raise HostError(f"test bed: no experimental Kubo feature named {', '.join(sorted(unknown))}")

        def switch(node: Node, config: dict[str, Any]) -> None:
            for feature, keys in kubo.EXPERIMENTAL.items():
                for key in keys:
                    section, name = key.split(".")
                    config.setdefault(section, {})[name] = feature not in features

        self._restart_nodes(switch)

    def _restart_nodes(self, edit: Callable[[Node, dict[str, Any]], None]) -> None:
        """Stop every node, ``edit`` each one's Kubo config in place, start them again and reconnect."""
        for node in self.nodes:
            self.stop_node(node)
        for node in self.nodes:
            path = node.repo / "config"
            config = json.loads(path.read_text())
            edit(node, config)
            path.write_text(json.dumps(config, indent=2) + "\n")
        for node in self.nodes:
            self._start_daemon(node)
        deadline = time.monotonic() + START_TIMEOUT
        for node in self.nodes:
            kubo.wait_ready(node, self._processes[f"{node.name}/kubo"], deadline)
        kubo.wait_connected(self.nodes, deadline)
        self._save()

    def set_rate(self, target: Host | Node | str, mbit: float | None) -> None:
        """Limit a node's link to ``mbit`` Mbit/s in each direction (None removes the limit).

        ``target``: a Host, a Node, or a name (``frontend``, ``h1``).
        """
        name = target if isinstance(target, str) else target.name
        layout = self.layout
        if name == "frontend":
            ends: list[tuple[str, str | None]] = [
                (f"{layout.prefix}-fea", None),
                (f"{layout.prefix}-feb", None),
            ]
        else:
            netns = layout.netns(name)
            ends = [(f"{netns}b", netns), (f"{netns}a", None)]
        for device, inside in ends:
            system.set_rate(device, inside, mbit)

    def add_node(self, name: str, swarm_key: bytes | None = None) -> Node:
        """An extra Kubo node in a namespace of its own on the bridge (no sshd, no folders).

        It peers with every bed node, but the bed's nodes do not list it. ``swarm_key`` defaults to the
        bed's; another key makes an outsider that must not get in.
        """
        if name in {n.name for n in [*self.nodes, *self.extras]}:
            raise HostError(f"test bed: a node named {name} is already running")
        taken = {n.swarm_address.split("/")[2] for n in self.extras}
        offset = self.layout.extra_offset + 1
        while self.layout.address(offset) in taken:
            offset += 1
        address = self.layout.address(offset)
        netns = self.layout.netns(name)
        node = Node(
            name=name,
            repo=self.root / name / "ipfs",
            api=f"http://127.0.0.1:{kubo.API_PORT}",
            gateway=f"http://127.0.0.1:{kubo.GATEWAY_PORT}",
            peer_id="",
            swarm_address=f"/ip4/{address}/tcp/{kubo.SWARM_PORT}",
            netns=netns,
        )
        shutil.rmtree(node.repo.parent, ignore_errors=True)  # a node of that name added and removed before
        node.repo.parent.mkdir(parents=True)
        node.peer_id = network.init_repository(kubo.KUBO, node.repo)
        peers = tuple(network.Peer(o.peer_id, (o.swarm_address,)) for o in self.nodes)
        network.configure_private_node(node.repo, swarm_key or self.swarm_key, self._settings(node, peers))
        self.extras.append(node)
        run(["ip", "netns", "add", netns])
        self._save()
        add_veth(
            f"{netns}a", f"{netns}b", self.layout.bridge, netns, f"{address}/{self.layout.prefix_length}"
        )
        self._start_daemon(node)
        kubo.wait_ready(node, self._processes[f"{name}/kubo"], time.monotonic() + START_TIMEOUT)
        return node

    def add_frontend_node(self, name: str) -> Node:
        """A second Kubo repository on the frontend, made (``ipfs init``) but neither configured nor started
        (``start_node``): a node of another network than the bed's, such as the marketplace network the
        frontends of several clouds share (``testbed.market``). It listens on the frontend's address at
        the next swarm port, its RPC API and gateway on the loopback ports after the frontend node's."""
        if name in {n.name for n in [*self.nodes, *self.extras]}:
            raise HostError(f"test bed: a node named {name} is already running")
        layout = self.layout
        node = Node(
            name=name,
            repo=self.root / "frontend" / name / "ipfs",
            api=f"http://127.0.0.1:{layout.frontend_api_port + 1}",
            gateway=f"http://127.0.0.1:{layout.frontend_gateway_port + 1}",
            peer_id="",
            swarm_address=f"/ip4/{layout.frontend_address}/tcp/{kubo.SWARM_PORT + 1}",
            netns=None,
        )
        for port in (node.api_port, layout.frontend_gateway_port + 1):
            if not port_free("127.0.0.1", port):
                raise HostError(f"test bed: 127.0.0.1:{port} is in use; the frontend's {name} node needs it")
        shutil.rmtree(node.repo.parent, ignore_errors=True)
        node.repo.parent.mkdir(parents=True)
        node.peer_id = network.init_repository(kubo.KUBO, node.repo)
        self.extras.append(node)
        self._save()
        return node

    def remove_node(self, node: Node) -> None:
        """Stop a node added with ``add_node`` and remove its namespace and link."""
        if node not in self.extras or node.netns is None:
            raise HostError(f"test bed: {node.name} was not added with add_node")
        node.close()
        self.stop_node(node)
        stop_processes(netns_processes(node.netns))
        run(["ip", "netns", "del", node.netns], check=False)
        run(["ip", "link", "del", f"{node.netns}a"], check=False)
        # A connection the node was opening as it stopped can outlive it, half-open, on the bed's side:
        # reset whatever still points at its address, as a real peer's reboot would.
        address = node.swarm_address.split("/")[2]
        for netns in [None, *(host.netns for host in self.hosts)]:
            inside = [] if netns is None else ["ip", "netns", "exec", netns]
            run([*inside, "ss", "--kill", "--tcp", "dst", address])
        self.extras = [n for n in self.extras if n is not node]
        self._save()

    def start_cluster(self, hosts: Sequence[Host]) -> str:
        """Start IPFS Cluster peers beside the frontend's node and ``hosts``' nodes, configured as
        ``one-ipfs cluster init`` does (``testbed.cluster``); the REST API's address (``run_cluster``)."""
        service = cluster.binaries() / cluster.SERVICE
        folder = self.root / "frontend" / "cluster"
        frontend = cluster.init_peer(service, "frontend", folder, self.cluster_address)
        peers = [frontend] + [
            cluster.init_peer(service, host.name, host.folder / "cluster", host.address) for host in hosts
        ]
        secret = cluster.new_secret()
        for peer in peers:
            port = self.layout.frontend_api_port if peer is frontend else kubo.API_PORT
            cluster.configure(peer, secret, frontend, [other for other in peers if other is not peer], port)
        return self.run_cluster(frontend.folder, {host.name: host.folder / "cluster" for host in hosts})

    @property
    def cluster_address(self) -> str:
        """The address the frontend's cluster peer listens on, in a network namespace of its own."""
        return self.layout.address(cluster.FRONTEND_OFFSET)

    def run_cluster(self, frontend: Path, hosts: Mapping[str, Path]) -> str:
        """Run configured IPFS Cluster peers (``start_cluster``'s, or the ones ``one-ipfs cluster init``
        configured) from their folders (``hosts``: by host name): the frontend's in a namespace of its own at
        ``cluster_address``, with a relay to its Kubo node's RPC API (at the same port there) and one from its
        REST API (9094 there) to the frontend's loopback, whose address is returned once every peer has
        joined. They stop with the bed."""
        layout = self.layout
        netns = layout.netns("fc")
        run(["ip", "netns", "add", netns])
        add_veth(
            f"{netns}a", f"{netns}b", layout.bridge, netns, f"{self.cluster_address}/{layout.prefix_length}"
        )
        port = layout.frontend_api_port
        self._relays.append(Forwarder(netns, port, port=port, outward=True))
        self._cluster_service = cluster.binaries() / cluster.SERVICE
        self._cluster_folders = {"frontend": frontend, **hosts}
        api_port = layout.frontend_api_port + cluster.REST_OFFSET
        self._relays.append(Forwarder(netns, cluster.REST_PORT, port=api_port))
        self._cluster_api = f"http://127.0.0.1:{api_port}"
        self._start_cluster_peers()
        return self._cluster_api

    def restart_cluster(self) -> None:
        """Restart every cluster peer, as settings they read only at start need (a new trusted peer), and
        wait until the cluster has formed again."""
        for name in self._cluster_folders:
            self.stop_cluster_peer(name)
        self._start_cluster_peers()

    def _start_cluster_peers(self) -> None:
        peers = {name: cluster_peer.read_peer_id(folder) for name, folder in self._cluster_folders.items()}
        # The frontend's peer first: hosts' peers then reach it at their first dial, instead of both sides
        # backing off from dials made before the other listened (seen: a peer the frontend's could not
        # reach). A host's peer is then seen at its second ping (``quicken``: 2 s).
        self.start_cluster_peer("frontend")
        cluster.wait_formed(
            self._cluster_api, {"frontend": peers["frontend"]}, time.monotonic() + START_TIMEOUT
        )
        for name in [name for name in self._cluster_folders if name != "frontend"]:
            self.start_cluster_peer(name)
        cluster.wait_formed(self._cluster_api, peers, time.monotonic() + START_TIMEOUT)

    def second_frontend_apis(self, name: str) -> tuple[str, str]:
        """Host ``name`` as a second frontend's node: its Kubo RPC API and its cluster peer's REST API (both
        on its own loopback, as the drivers of a frontend there reach them) relayed to the frontend's
        loopback, where this bed's one oned runs the drivers. They stop with the bed."""
        netns = self.host(name).netns
        relays = [Forwarder(netns, kubo.API_PORT), Forwarder(netns, cluster.REST_PORT)]
        self._relays.extend(relays)
        return relays[0].url, relays[1].url

    def start_cluster_peer(self, name: str) -> None:
        """(Re)start the cluster peer of node ``name`` (``run_cluster`` knows its folder)."""
        folder = self._cluster_folders[name]
        if name == "frontend":
            prefix, log = ["nsenter", f"--net={NETNS_DIR / self.layout.netns('fc')}"], self.root / "frontend"
        else:
            prefix, log = self._enter(name), self.host(name).folder
        command: list[str | os.PathLike[str]] = [*prefix, self._cluster_service, "--config", folder, "daemon"]
        self._spawn(f"{name}/cluster", command, log=log / "cluster.log", cwd=folder)

    def stop_cluster_peer(self, name: str) -> None:
        """Stop the cluster peer of node ``name`` (SIGTERM)."""
        self._stop(f"{name}/cluster")

    def replace_repository(self, node: Node) -> None:
        """Lose ``node``'s IPFS repository for good and start an empty one in its place, as a rebuilt machine
        would: a new identity, the same addresses and peers, no block, pin or MFS entry of the old one."""
        self.stop_node(node)
        shutil.rmtree(node.repo)
        node.peer_id = network.init_repository(kubo.KUBO, node.repo)
        peers = tuple(network.Peer(o.peer_id, (o.swarm_address,)) for o in self.nodes if o is not node)
        network.configure_private_node(node.repo, self.swarm_key, self._settings(node, peers))
        self._save()
        self.start_node(node)

    # Teardown -------------------------------------------------------------------------------------------

    def down(self) -> None:
        """Stop every process, remove every namespace and link of this bed (idempotent)."""
        self._disarm()
        for node in [*self.nodes, *self.extras]:
            node.close()
        for relay in self._relays:
            relay.close()
        self._relays.clear()
        clear(self.root, self.layout)
        for name in list(self._popens):
            self._forget(name)
        self._processes.clear()

    def detach(self) -> None:
        """Leave the bed running after this process exits (``python -m testbed up``)."""
        self._disarm()
        for node in [*self.nodes, *self.extras]:
            node.close()
        self._popens.clear()

    def __enter__(self) -> Bed:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.down()

    def _forget(self, name: str) -> None:
        popen = self._popens.pop(name, None)
        if popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen.wait(timeout=1)

    def _arm(self) -> None:
        """Tear down on interpreter exit and on SIGTERM/SIGHUP (Ctrl-C raises KeyboardInterrupt anyway)."""
        atexit.register(self.down)
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGHUP):
                if signal.getsignal(sig) == signal.SIG_DFL:
                    self._previous_handlers[sig] = signal.signal(sig, _exit_on_signal)

    def _disarm(self) -> None:
        atexit.unregister(self.down)
        for sig, handler in self._previous_handlers.items():
            signal.signal(sig, handler)
        self._previous_handlers.clear()

    # State ----------------------------------------------------------------------------------------------

    def _save(self) -> None:
        with self._lock:
            state = {
                "root": str(self.root),
                "layout": asdict(self.layout),
                "swarm_key": self.swarm_key.decode(),
                "rate_mbit": self.rate_mbit,
                "nodes": {n.name: _node_state(n) for n in [*self.nodes, *self.extras]},
                "hosts": [
                    {"name": h.name, "address": h.address, "netns": h.netns, "folder": str(h.folder)}
                    for h in self.hosts
                ],
                "extras": [n.name for n in self.extras],
                "processes": {name: asdict(p) for name, p in self._processes.items()},
                "namespaces": dict(self._namespaces),
            }
        path = self.root / "state.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        tmp.replace(path)

    @classmethod
    def load(cls, root: Path = DEFAULT_ROOT) -> Bed:
        """The bed another process started at ``root`` (its processes stay that process's children)."""
        state = _read_state(root.resolve())
        if state is None:
            raise StorageError(f"test bed: no bed is running at {root} (no state.json)")
        bed = cls(
            Path(state["root"]), Layout(**state["layout"]), state["swarm_key"].encode(), state["rate_mbit"]
        )
        nodes = {name: Node(**_node_fields(fields)) for name, fields in state["nodes"].items()}
        bed.frontend = nodes["frontend"]
        for h in state["hosts"]:
            folder = Path(h["folder"])
            bed.hosts.append(
                Host(
                    h["name"],
                    h["address"],
                    h["netns"],
                    folder,
                    folder / "var-lib-one",
                    folder / "var-tmp-one",
                    nodes[h["name"]],
                )
            )
        bed.extras = [nodes[name] for name in state["extras"]]
        bed._processes = {name: Process(**fields) for name, fields in state["processes"].items()}
        bed._namespaces = dict(state["namespaces"])
        return bed

    def status(self) -> str:
        """One line per node: whether its daemon runs and how many bed peers it is connected to."""
        lines = [
            f"bed at {self.root}: frontend + {len(self.hosts)} hosts, rate {self.rate_mbit or 'unlimited'}"
        ]
        for node in [*self.nodes, *self.extras]:
            process = self._processes.get(f"{node.name}/kubo")
            if process is None or not process.alive():
                lines.append(f"  {node.name:9} {node.swarm_address:28} stopped")
                continue
            try:
                peers = len(node.client(timeout=5).swarm_peers())
                state = f"running, {peers} peers"
            except Exception as exc:  # status reports whatever is wrong
                state = f"running, RPC failing: {exc}"
            lines.append(f"  {node.name:9} {node.swarm_address:28} {state}")
        for node in [*self.nodes, *self.extras]:
            node.close()
        return "\n".join(lines)


def clear(root: Path, layout: Layout) -> None:
    """Remove every process, namespace and link of the bed at ``root``, running or left by a killed run."""
    state = _read_state(root) or {}
    victims = {p.pid: p for p in marked_processes(str(root))}
    for fields in state.get("processes", {}).values():
        process = Process(**fields)
        if process.alive():
            victims[process.pid] = process
    for identity in state.get("namespaces", {}).values():
        victims.update({p.pid: p for p in processes_in_namespace("mnt", identity)})
    netns_names = netns_list(layout.prefix)
    for netns in netns_names:
        victims.update({p.pid: p for p in netns_processes(netns)})
    victims.pop(os.getpid(), None)
    stop_processes(victims.values())
    # Whatever is already gone is fine (a veth goes with its peer); whatever stays is an error.
    for netns in netns_names:
        run(["ip", "netns", "del", netns], check=False)
    for link in _bed_links(layout):
        run(["ip", "link", "del", link], check=False)
    remaining = netns_list(layout.prefix) + _bed_links(layout)
    if remaining:
        raise HostError(f"test bed: could not remove {', '.join(remaining)}")
    with contextlib.suppress(FileNotFoundError):
        (root / "state.json").unlink()


def _bed_links(layout: Layout) -> list[str]:
    return [n for n in links(layout.prefix) if n == layout.bridge or n.startswith(f"{layout.prefix}-")]


def _node_state(node: Node) -> dict[str, Any]:
    return {
        "name": node.name,
        "repo": str(node.repo),
        "api": node.api,
        "gateway": node.gateway,
        "peer_id": node.peer_id,
        "swarm_address": node.swarm_address,
        "netns": node.netns,
        "auth": node.auth,
    }


def _node_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    return {**fields, "repo": Path(fields["repo"])}


def _read_state(root: Path) -> dict[str, Any] | None:
    try:
        state: dict[str, Any] = json.loads((root / "state.json").read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise StorageError(f"test bed: cannot read {root / 'state.json'}: {exc}") from exc
    return state


def _prepare_root(root: Path) -> None:
    """An empty bed root: created, or emptied if an earlier bed used it (never any other folder)."""
    if root.exists():
        if any(root.iterdir()) and not (root / BED_FILE).exists():
            raise StorageError(f"test bed: {root} is not empty and holds no earlier bed; choose another root")
        shutil.rmtree(root)
    root.mkdir(mode=0o755, parents=True)
    (root / BED_FILE).write_text("This folder is a one-ipfs test bed; `python -m testbed up` empties it.\n")


def _require_root() -> None:
    if os.geteuid() != 0:
        raise HostError("test bed: must run as root (network namespaces, mounts, sshd)")
    missing = [
        tool
        for tool in ("ip", "tc", "nsenter", "unshare", "setpriv", "ssh", "ssh-keygen")
        if not shutil.which(tool)
    ]
    if missing or not sshd.SSHD.exists():
        raise HostError(f"test bed: missing {', '.join(missing) or sshd.SSHD}; run `make system`")
    if not kubo.KUBO.exists():
        raise HostError(f"test bed: no Kubo binary at {kubo.KUBO}; run `make kubo`")


def _untraversable(path: Path, user: pwd.struct_passwd) -> list[Path]:
    """The folders from / down to ``path`` itself that ``user`` may not traverse (symlinks are no folders)."""
    return [f for f in [*reversed(path.parents), path] if not f.is_symlink() and not may_traverse(f, user)]


def _check_driver_python(bed: Bed, user: pwd.struct_passwd) -> None:
    """oneadmin runs the drivers with this venv's python: make sure it can, or say what to change.

    The folders on the way are exposed already; what stops it then lies within the checkout or the Python
    (a checkout made with umask 077, say).
    """
    python = Path(sys.executable)
    version = ".".join(map(str, sys.version_info[:3]))
    script = "import platform, sys, one_ipfs, testbed; assert platform.python_version() == sys.argv[1]"
    result = bed.frontend_command([python, "-c", script, version], user.pw_name)
    if result.returncode != 0:
        reason = result.stderr.decode(errors="replace").strip().splitlines()
        readable = shlex.join([str(REPO), os.path.realpath(sys.base_prefix)])
        raise StorageError(
            f"test bed: {user.pw_name} cannot run {python} ({reason[-1] if reason else 'no output'}); "
            f"let it read what is inside: chmod -R o+rX {readable}"
        )


def _command_name(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None


def _wait_logged(log: Path, text: str, process: Process, deadline: float, *, offset: int = 0) -> None:
    """Wait for ``text`` in a daemon's log past ``offset`` (a probe connection would leave complaints in
    sshd's log)."""
    while text.encode() not in log.read_bytes()[offset:]:
        if not process.alive():
            raise HostError(f"test bed: {process.name} exited; see {log}")
        if time.monotonic() > deadline:
            raise HostError(f"test bed: {process.name} did not start in time; see {log}")
        time.sleep(0.05)


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)
