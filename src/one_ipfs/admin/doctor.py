"""``one-ipfs doctor``: everything that keeps images from reaching VMs, on the frontend and on every host.

Each node answers one ``protocol.Probe`` (hosts over the drivers' channel, which runs it without the host
bundle); the verdicts are drawn here, so a host needs nothing but python3.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from one_ipfs.admin import images as image_catalog
from one_ipfs.admin.nodes import FRONTEND, Reply, Site, call, call_all, ssh_destination
from one_ipfs.config import read_defaults
from one_ipfs.defaults import SETTINGS
from one_ipfs.errors import OneIpfsError, OpenNebulaError
from one_ipfs.host.protocol import NodeFacts, Probe
from one_ipfs.hosts.bundle import BUNDLE_STAMP, HOST_LIB, bundle_digest, remote_lib
from one_ipfs.opennebula.install import DEFAULTS, DRIVER_DIRS, interpreter_problem

MIN_KUBO = (0, 40)
MIN_PYTHON = (3, 9)
MAX_SKEW = 5.0
API_AUTH_SETTING = "IPFS_API_AUTH_FILE"
HOST_API_AUTH_SETTING = "IPFS_HOST_API_AUTH_FILE"
LOOPBACK = re.compile(r"^/(ip4/127\.\d+\.\d+\.\d+|ip6/::1|unix)/")
CLUSTER = "cluster"
"""The node named in problems of the IPFS Cluster's pinset."""

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Problem:
    node: str
    check: str
    what: str
    fix: str


@dataclass
class Report:
    """The probes' facts per node and every problem found (``ok`` when there is none)."""

    facts: dict[str, dict[str, Any]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, node: str, check: str, what: str, fix: str) -> None:
        self.problems.append(Problem(node, check, what, fix))


@dataclass(frozen=True)
class Target:
    """Where to look: the remotes tree, the frontend's repo and API, the hosts' repo and API, and the files
    with the APIs' secrets (None: ipfs.conf's ``IPFS_API_AUTH_FILE`` and ``IPFS_HOST_API_AUTH_FILE``)."""

    site: Site
    repo: str
    host_repo: str
    api: str | None = None
    host_api: str | None = None
    api_auth_file: str | None = None
    host_api_auth_file: str | None = None

    def apis(self) -> tuple[str, str]:
        defaults = read_defaults(self.site.remotes / DEFAULTS)
        return (
            self.api or defaults.get("IPFS_API", SETTINGS["IPFS_API"]),
            self.host_api or defaults.get("IPFS_HOST_API", SETTINGS["IPFS_HOST_API"]),
        )

    def secrets(self) -> tuple[str, str]:
        """The files with the frontend's and the hosts' secrets (empty: none)."""
        defaults = read_defaults(self.site.remotes / DEFAULTS)
        return (
            self.api_auth_file if self.api_auth_file is not None else defaults.get(API_AUTH_SETTING, ""),
            self.host_api_auth_file
            if self.host_api_auth_file is not None
            else defaults.get(HOST_API_AUTH_SETTING, ""),
        )


def probe_all(
    target: Target, hosts: list[str], progress: Callable[[Reply[NodeFacts]], None] | None = None
) -> dict[str, Reply[NodeFacts]]:
    """The frontend's probe, then every host's."""
    api, host_api = target.apis()
    secret, host_secret = target.secrets()
    replies = {
        FRONTEND: call(
            FRONTEND, Probe(repo=target.repo, api=api, auth_file=secret, auth_setting=API_AUTH_SETTING)
        )
    }
    if progress is not None:
        progress(replies[FRONTEND])
    on_hosts = Probe(
        repo=target.host_repo,
        api=host_api,
        auth_file=host_secret,
        auth_setting=HOST_API_AUTH_SETTING,
        lib=remote_lib(),
        frontend_bundle=bundle_digest(target.site.remotes),
    )
    replies.update(call_all(hosts, lambda _: on_hosts, progress))
    return replies


def diagnose(target: Target, replies: dict[str, Reply[NodeFacts]]) -> Report:
    report = Report()
    _check_remotes(target.site, report)
    _check_interpreter(target.site, report)
    frontend = replies[FRONTEND].result
    for name, reply in replies.items():
        report.facts[name] = _public_facts(reply)
        if reply.python_missing:
            report.add(
                name,
                "python3",
                "python3 is not on the PATH of ssh sessions",
                f"install python3 (>= 3.9) on {name}",
            )
            continue
        if reply.result is None:
            report.add(
                name,
                "ssh",
                reply.error or "no answer",
                f"check that oneadmin can `ssh {ssh_destination(name)}` without a password",
            )
            continue
        _check_node(name, reply.result, report, frontend, target)
        if name != FRONTEND:
            _check_host(name, reply, report, frontend, target)
    return report


def check_replication(report: Report) -> None:
    """Every version of an image in a datastore with IPFS_CLUSTER_API is held by as many cluster peers as
    its IPFS_REPLICATION_MIN asks for. Where oned cannot be asked for the images, nothing is checked."""
    try:
        images = image_catalog.ipfs_images()
    except OpenNebulaError as exc:
        log.info("image replication not checked: %s", exc)
        return
    except OneIpfsError as exc:
        report.add(
            CLUSTER,
            "replication",
            f"cannot list the images of IPFS datastores: {exc}",
            "fix it, then run again",
        )
        return
    found = image_catalog.placement(images)
    for api, reason in found.unknown.items():
        report.add(
            CLUSTER,
            "replication",
            f"cannot tell how images are replicated: {reason}",
            f"start the frontend's IPFS Cluster peer (systemctl start ipfs-cluster); its REST API is {api}",
        )
    for image, number, cid in image_catalog.under_replicated(images, found):
        held = found.of(cid)
        minimum = image.config.replication.minimum if image.config.replication else 0
        report.add(
            CLUSTER,
            "replication",
            f"image {image.image.id} ({image.image.name}) version {number} ({cid}) is held by {len(held)} of "
            f"the {minimum} cluster peers it needs ({', '.join(held) or 'none'})",
            "bring its lost peers back or add storage hosts (`one-ipfs cluster join HOST`); then "
            f"`ipfs-cluster-ctl recover {cid}`",
        )


def _check_remotes(site: Site, report: Report) -> None:
    missing = [
        str(site.remotes / d)
        for d in (*DRIVER_DIRS, HOST_LIB / BUNDLE_STAMP)
        if not (site.remotes / d).exists()
    ]
    if missing:
        report.add(
            FRONTEND,
            "drivers",
            f"the drivers are not installed ({', '.join(missing)} missing)",
            "run `one-ipfs install`",
        )


def _check_interpreter(site: Site, report: Report) -> None:
    """The interpreter ipfs.conf gives the drivers (the launcher's python3 when it names none) runs them."""
    defaults = site.remotes / DEFAULTS
    if not defaults.exists():
        return
    python = read_defaults(defaults).get("ONE_IPFS_PYTHON") or SETTINGS["ONE_IPFS_PYTHON"]
    problem = interpreter_problem(python)
    if problem is not None:
        report.add(
            FRONTEND,
            "python",
            f"the drivers' interpreter {python} (ONE_IPFS_PYTHON in {defaults}) cannot run them: {problem}",
            "run `one-ipfs install --python PYTHON` with the python of the venv one-ipfs is installed in",
        )


def _check_node(
    name: str, facts: NodeFacts, report: Report, frontend: NodeFacts | None, target: Target
) -> None:
    daemon, repo = facts.daemon, facts.repo
    python = tuple(int(part) for part in facts.python.split(".")[:2])
    if python < MIN_PYTHON:
        report.add(
            name,
            "python3",
            f"python3 is {facts.python}, older than 3.9",
            f"install python3 >= 3.9 on {name}",
        )
    _check_daemon(name, facts, report)
    if daemon.up and repo.restart_pending:
        report.add(
            name,
            "restart",
            "the Kubo daemon runs older settings: `one-ipfs network` changed its repository after it started",
            f"restart the Kubo daemon on {name} (systemctl restart ipfs)",
        )
    frontend_key = frontend.repo.swarm_key if frontend is not None else None
    if repo.error:
        report.add(name, "repo", repo.error, _repo_fix(name, target))
    elif repo.swarm_key is None:
        report.add(
            name,
            "private",
            "not in private-network mode: the repository has no swarm.key",
            "run `one-ipfs network init`",
        )
    elif name != FRONTEND and repo.swarm_key != frontend_key:
        report.add(
            name,
            "private",
            f"holds another swarm key (fingerprint {repo.swarm_key}, the frontend's is {frontend_key})",
            f"run `one-ipfs network join {ssh_destination(name)}` and restart its Kubo daemon",
        )
    api_address = daemon.api_address if daemon.up else repo.api_address
    exposed = [a for a in _as_list(api_address) if not LOOPBACK.match(a)]
    if exposed:
        report.add(
            name,
            "rpc",
            f"the Kubo RPC API listens beyond loopback ({', '.join(exposed)}): it grants full control",
            "set Addresses.API to /ip4/127.0.0.1/tcp/5001 (`ipfs config Addresses.API ...`) and restart Kubo",
        )
    limit, held = daemon.storage_max, daemon.repo_size
    if daemon.up and limit is not None and held is not None and limit < held:
        report.add(
            name,
            "storage",
            f"Datastore.StorageMax ({limit} B) is below what the node holds ({held} B)",
            "raise Datastore.StorageMax (`ipfs config Datastore.StorageMax 500GB`) and restart Kubo",
        )


def _check_daemon(name: str, facts: NodeFacts, report: Report) -> None:
    """Whether the node's daemon answered, and if not, why: its secret, Kubo missing, or a daemon down."""
    daemon, repo = facts.daemon, facts.repo
    if daemon.up:
        version = daemon.version or "0"
        if _version(version) < MIN_KUBO:
            report.add(
                name, "kubo", f"Kubo {version} is older than 0.40", f"upgrade Kubo on {name} to 0.40 or later"
            )
    elif daemon.unasked:
        pass  # the host bundle holds the client that asks: _check_host says what is wrong with it
    elif daemon.auth:
        setting = API_AUTH_SETTING if name == FRONTEND else HOST_API_AUTH_SETTING
        report.add(
            name,
            "auth",
            str(daemon.error),
            f"put the secret of the node's API.Authorizations into the file {setting} names (ipfs.conf)",
        )
    elif facts.ipfs_binary is None and repo.error:
        report.add(
            name,
            "kubo",
            f"Kubo is missing: no ipfs command, no repository, {daemon.error}",
            f"install Kubo >= 0.40 on {name}",
        )
    else:
        report.add(
            name,
            "daemon",
            f"the Kubo daemon is down: {daemon.error}",
            f"start the Kubo daemon on {name} (systemctl start ipfs)",
        )


def _check_host(
    name: str, reply: Reply[NodeFacts], report: Report, frontend: NodeFacts | None, target: Target
) -> None:
    facts = reply.result
    if facts is None:
        return
    daemon = facts.daemon
    frontend_id = frontend.daemon.peer_id or frontend.repo.peer_id if frontend is not None else None
    if daemon.up and frontend_id and frontend_id not in daemon.peers:
        report.add(
            name,
            "peering",
            "not connected to the frontend's node: images cannot reach this host",
            "run `one-ipfs network join "
            + ssh_destination(name)
            + "`, restart Kubo there, and check that swarm port 4001 is open",
        )
    if facts.bundle and facts.bundle_python:
        report.add(
            name,
            "python3",
            f"python3 {facts.python} cannot run the drivers' host bundle: {facts.bundle_python}",
            f"install python3 (>= 3.9, with its standard library) on {name}",
        )
    expected = bundle_digest(target.site.remotes)
    if facts.bundle != expected:
        held = facts.bundle or "none"
        report.add(
            name, "remotes", f"host bundle {held}, the frontend's is {expected}", "run `onehost sync --force`"
        )
    elif daemon.unasked and not facts.bundle_python:
        report.add(  # neither bundle exists: the drivers are not installed yet
            name,
            "daemon",
            f"the Kubo daemon's state is unknown ({daemon.error})",
            "install the drivers (`one-ipfs install`), then run `onehost sync --force`",
        )
    skew = facts.time - (reply.sent_at + reply.received_at) / 2
    allowed = MAX_SKEW + (reply.received_at - reply.sent_at) / 2
    if abs(skew) > allowed:
        report.add(
            name,
            "clock",
            f"the clock is {skew:+.1f} s off the frontend's",
            f"run NTP (chrony) on {name} and the frontend",
        )


def _public_facts(reply: Reply[NodeFacts]) -> dict[str, Any]:
    facts = asdict(reply.result) if reply.result is not None else {}
    if reply.error:
        facts["error"] = reply.error
    return facts


def _repo_fix(name: str, target: Target) -> str:
    option = "--repo" if name == FRONTEND else "--host-repo"
    path = target.repo if name == FRONTEND else target.host_repo
    return f"run Kubo as oneadmin with IPFS_PATH={path}, or name its repository with {option}"


def _version(text: str) -> tuple[int, int]:
    major, minor = [*(int(n) for n in re.findall(r"\d+", text)[:2]), 0, 0][:2]
    return major, minor


def _as_list(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [str(v) for v in value]
    return []
