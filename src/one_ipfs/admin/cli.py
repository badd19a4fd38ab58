"""``one-ipfs``: install the drivers, check the frontend and hosts, build the private IPFS network."""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import asdict
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from one_ipfs import __version__
from one_ipfs.admin import cluster as replication_cluster
from one_ipfs.admin import doctor as doctor_checks
from one_ipfs.admin import images as image_catalog
from one_ipfs.admin import install as installer
from one_ipfs.admin import network as private_network
from one_ipfs.admin.nodes import FRONTEND, Reply, Site, host_label, host_names
from one_ipfs.config import read_defaults
from one_ipfs.defaults import CLUSTER_REST_API, CLUSTER_TIMEOUT
from one_ipfs.errors import InvalidInput, OneIpfsError
from one_ipfs.host.inputs import UNIT_NAME
from one_ipfs.host.protocol import NodeFacts
from one_ipfs.ipfs.cluster import ClusterClient
from one_ipfs.ipfs.rpc import parse_api
from one_ipfs.opennebula.install import DEFAULTS, interpreter_problem

T = TypeVar("T")
Configured = dict[str, private_network.Configured]
"""What configuring did to each node and its daemon (``one-ipfs network`` and ``cluster``)."""
Tick = Callable[[Reply[Any]], None]

HOST_REPO = "/var/lib/one/.ipfs"
HOST_CLUSTER = "/var/lib/one/.ipfs-cluster"
DAEMON_UNIT = "ipfs"
CLUSTER_UNIT = "ipfs-cluster"
NEXT_STEPS = (
    "Next: 1. restart oned (systemctl restart opennebula)  "
    "2. copy the drivers to every host: onehost sync --force"
)

PIPE_WIDTH = 100_000
"""Tables printed into a pipe or a file are as wide as their values: nothing is cut or folded."""

console = Console()
errors = Console(stderr=True)


def _export_one_location(_: click.Context, __: click.Parameter, location: str | None) -> None:
    """``--one-location`` stands for ``$ONE_LOCATION``, which every part (remotes tree, oned.conf, state
    folder, the drivers' own code run here) reads, as OpenNebula's own tools do."""
    if location:
        os.environ["ONE_LOCATION"] = os.path.abspath(location)


one_location_option = click.option(
    "--one-location",
    type=click.Path(file_okay=False),
    expose_value=False,
    is_eager=True,
    callback=_export_one_location,
    help="A self-contained OpenNebula (default: $ONE_LOCATION, else the system-wide /etc/one, /var/lib/one).",
)
hosts_option = click.option(
    "--hosts", help="Comma-separated host names (default: every host of `onehost list`)."
)
repo_option = click.option(
    "--repo",
    default=lambda: os.environ.get("IPFS_PATH", "~/.ipfs"),
    show_default="$IPFS_PATH or ~/.ipfs",
    help="The frontend's Kubo repository.",
)
host_repo_option = click.option(
    "--host-repo",
    default=HOST_REPO,
    show_default=True,
    help="Each host's Kubo repository (as oneadmin sees it).",
)
api_options = (
    click.option("--api", help="The frontend node's RPC API (default: IPFS_API of ipfs.conf)."),
    click.option(
        "--host-api", help="Each host node's RPC API, as seen on the host (default: IPFS_HOST_API)."
    ),
    click.option(
        "--api-auth-file",
        help="The file with the frontend node's RPC secret (default: IPFS_API_AUTH_FILE; empty: none).",
    ),
    click.option(
        "--host-api-auth-file",
        help="The same file on every host (default: IPFS_HOST_API_AUTH_FILE; empty: none).",
    ),
)
unit_option = click.option(
    "--unit",
    default=DAEMON_UNIT,
    show_default=True,
    help="The systemd unit that runs Kubo on each node; changed nodes where it is active are restarted.",
)
systemd_unit_option = click.option(
    "--systemd-unit",
    is_flag=True,
    help="Also write the --unit systemd unit that runs each node's Kubo daemon (as its repository's owner, "
    "private network forced), then enable and start it, or restart it (root or password-less sudo).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="one-ipfs")
@click.option("--verbose", "-v", is_flag=True, help="Say what is being done, step by step, on stderr.")
@click.pass_context
def main(context: click.Context, verbose: bool) -> None:
    """Manage the one-ipfs OpenNebula drivers and their private IPFS network."""
    console.no_color = errors.no_color = os.environ.get("NO_COLOR", "") != ""
    if not console.is_terminal:
        console.width = PIPE_WIDTH
    if verbose:
        _say_what_is_done(context)


def _say_what_is_done(context: click.Context) -> None:
    """``--verbose``: the steps the package logs (commands run, nodes asked, files written) go to stderr
    for this command."""
    package = logging.getLogger("one_ipfs")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("one-ipfs: %(message)s"))
    package.addHandler(handler)
    package.setLevel(logging.INFO)

    def quiet() -> None:
        package.removeHandler(handler)
        package.setLevel(logging.NOTSET)

    context.call_on_close(quiet)


@main.command()
@one_location_option
@click.option("--oned-conf", type=click.Path(dir_okay=False), help="oned.conf to register the drivers in.")
@click.option(
    "--python", default=sys.executable, show_default=True, help="Interpreter that runs the drivers."
)
@click.option(
    "--print",
    "dry_run",
    is_flag=True,
    help="Show the changes (a diff of oned.conf and vmm_execrc) without making them.",
)
def install(oned_conf: str | None, python: str, dry_run: bool) -> None:
    """Copy the drivers into the remotes tree and register them in oned.conf (safe to repeat)."""
    _run(lambda: _interpreter(python))
    site = _site(oned_conf)
    change = _run(lambda: installer.install(site, python, dry_run=dry_run))
    _show_change(change, dry_run, "install")


@main.command()
@one_location_option
@click.option("--oned-conf", type=click.Path(dir_okay=False), help="oned.conf to remove the drivers from.")
@click.option("--print", "dry_run", is_flag=True, help="Show the changes without making them.")
def uninstall(oned_conf: str | None, dry_run: bool) -> None:
    """Remove exactly what install added, from oned.conf and from the remotes tree."""
    site = _site(oned_conf)
    change = _run(lambda: installer.uninstall(site, dry_run=dry_run))
    _show_change(change, dry_run, "uninstall")


def _probe_nodes(
    label: str, target: doctor_checks.Target, hosts: str | None, as_json: bool
) -> dict[str, Reply[NodeFacts]]:
    """Ask the frontend and every host (given, or from ``onehost list``) what the doctor needs to know."""
    names = _run(lambda: host_names(hosts))
    return _with_progress(
        label, len(names) + 1, as_json, lambda tick: doctor_checks.probe_all(target, names, tick)
    )


@main.command()
@hosts_option
@one_location_option
@repo_option
@host_repo_option
@json_option
@api_options[0]
@api_options[1]
@api_options[2]
@api_options[3]
def doctor(
    *,
    hosts: str | None,
    repo: str,
    host_repo: str,
    api: str | None,
    host_api: str | None,
    api_auth_file: str | None,
    host_api_auth_file: str | None,
    as_json: bool,
) -> None:
    """Check the frontend and every host; say what is wrong and how to fix it (exit 1 on any problem)."""
    target = doctor_checks.Target(
        Site.find(), repo, host_repo, api, host_api, api_auth_file, host_api_auth_file
    )
    replies = _probe_nodes("Checking nodes", target, hosts, as_json)
    report = _run(lambda: doctor_checks.diagnose(target, replies))
    _run(lambda: doctor_checks.check_replication(report))
    if as_json:
        click.echo(
            json.dumps(
                {"ok": report.ok, "nodes": report.facts, "problems": [asdict(p) for p in report.problems]},
                indent=2,
            )
        )
    else:
        table = _table("one-ipfs doctor", ("Node", "Check", "Problem", "Fix"))
        for problem in report.problems:
            table.add_row(problem.node, problem.check, problem.what, problem.fix)
        if report.ok:
            console.print(
                f"[green]All good:[/green] frontend and {len(replies) - 1} host(s) checked, no problem found."
            )
        else:
            console.print(table)
    sys.exit(0 if report.ok else 1)


@main.command()
@hosts_option
@one_location_option
@json_option
def images(hosts: str | None, as_json: bool) -> None:
    """The images of IPFS datastores: handle, current CID, versions, size and the nodes holding them."""
    found = _run(image_catalog.ipfs_images)
    names = _run(lambda: host_names(hosts))
    held = _with_progress(
        "Asking nodes", len(names) + 1, as_json, lambda tick: image_catalog.holdings(found, names, tick)
    )
    placement = _run(lambda: image_catalog.placement(found))
    rows = [image.row(held, placement) for image in found]
    if as_json:
        click.echo(json.dumps({"images": rows}, indent=2))
        return
    columns = ("ID", "Name", "Datastore", "SOURCE", "CID", "Versions", "Size", "Held by", "Replicas")
    table = _table("IPFS images", columns)
    for row in rows:
        table.add_row(
            str(row["id"]),
            row["name"],
            f"{row['datastore_id']} {row['datastore']}",
            row["source"],
            row["cid"] or f"[yellow]{row['error']}[/yellow]",
            str(len(row["versions"])),
            "-" if row["size_mb"] is None else f"{row['size_mb']} MB",
            ", ".join([*row["held_by"], *(f"[yellow]{node}?[/yellow]" for node in row["unknown"])]) or "-",
            _replicas_cell(row),
        )
    console.print(table)
    reasons = {(node, reason) for row in rows for node, reason in row["unknown"].items()}
    for node, reason in sorted(reasons):
        errors.print(f"[yellow]{node}?[/yellow] could not say what it holds: {reason}", highlight=False)
    for api, reason in sorted(placement.unknown.items()):
        errors.print(
            f"[yellow]IPFS Cluster at {api}?[/yellow] could not say: {escape(reason)}", highlight=False
        )


def _replicas_cell(row: dict[str, Any]) -> str:
    """The cluster peers holding each version, the current one last; yellow below the minimum."""
    if row["replication_min"] is None:
        return "-"
    if row["replicas_unknown"]:
        return "[yellow]?[/yellow]"
    cells = []
    for version in row["versions"]:
        held = ", ".join(version["replicas"]) or "none"
        shown = f"v{version['version']}: {held}"
        cells.append(
            shown if len(version["replicas"]) >= row["replication_min"] else f"[yellow]{shown}[/yellow]"
        )
    return "; ".join(cells) or "-"


@main.command()
@click.argument("image")
@hosts_option
@one_location_option
@json_option
def prefetch(image: str, hosts: str | None, as_json: bool) -> None:
    """Have hosts hold IMAGE (id or name) before VMs start there (exit 1 if any host failed)."""
    found = _run(lambda: image_catalog.find_image(image))
    names = _run(lambda: host_names(hosts))
    outcomes = _with_progress(
        f"Prefetching {found.cid}",
        len(names),
        as_json,
        lambda tick: image_catalog.prefetch(found, names, tick),
    )
    failed = {host: reply.error for host, reply in outcomes.items() if reply.error is not None}
    if as_json:
        hosts_json = {
            host: {"ok": False, "error": reply.error}
            if reply.result is None
            else {"ok": True, **asdict(reply.result)}
            for host, reply in outcomes.items()
        }
        click.echo(json.dumps({"image": found.image.id, "cid": found.cid, "hosts": hosts_json}, indent=2))
    else:
        for host, reply in outcomes.items():
            if reply.result is not None:
                console.print(f"[green]{host}[/green]: holds {found.cid} ({reply.result.size} B)")
        for host, reason in failed.items():
            errors.print(f"[red]{host}[/red]: {reason}", highlight=False)
    sys.exit(1 if failed else 0)


@main.group()
def network() -> None:
    """The private IPFS network of the frontend and the hosts."""


@network.command("init")
@hosts_option
@one_location_option
@repo_option
@host_repo_option
@click.option(
    "--address", help="The frontend's storage-network address (default: the one its node listens on)."
)
@unit_option
@systemd_unit_option
def network_init(
    *, hosts: str | None, repo: str, host_repo: str, address: str | None, unit: str, systemd_unit: bool
) -> None:
    """Create the swarm key (once) and make the frontend and every host peers of one private network."""
    if address is not None:
        _run(lambda: _ipv4(address))
    _run(lambda: _unit_name(unit))
    names = _run(lambda: host_names(hosts))
    _configure(names, repo, host_repo, address, unit, new_network=True, systemd_unit=systemd_unit)


@network.command("join")
@click.argument("new_hosts", nargs=-1, required=True)
@hosts_option
@one_location_option
@repo_option
@host_repo_option
@unit_option
@systemd_unit_option
def network_join(
    *, new_hosts: tuple[str, ...], hosts: str | None, repo: str, host_repo: str, unit: str, systemd_unit: bool
) -> None:
    """Bring NEW_HOSTS into the existing network: they, the frontend and the hosts named peer with every
    member (these and the peers the frontend's node already has)."""
    _run(lambda: _unit_name(unit))
    names = _run(lambda: host_names(hosts))
    joining = _run(lambda: [host_label(name) for name in new_hosts])
    members = list(dict.fromkeys([*names, *joining]))
    _configure(members, repo, host_repo, None, unit, new_network=False, systemd_unit=systemd_unit)


@network.command("status")
@hosts_option
@one_location_option
@repo_option
@host_repo_option
@json_option
@api_options[0]
@api_options[1]
@api_options[2]
@api_options[3]
def network_status(
    *,
    hosts: str | None,
    repo: str,
    host_repo: str,
    api: str | None,
    host_api: str | None,
    api_auth_file: str | None,
    host_api_auth_file: str | None,
    as_json: bool,
) -> None:
    """Peer ID, Kubo version, peers and private-network mode of every node (exit 1 when a node is down or
    lacks the frontend's swarm key)."""
    target = doctor_checks.Target(
        Site.find(), repo, host_repo, api, host_api, api_auth_file, host_api_auth_file
    )
    replies = _probe_nodes("Asking nodes", target, hosts, as_json)
    frontend = replies[FRONTEND].result
    key = frontend.repo.swarm_key if frontend is not None else None
    rows = [_status_row(name, reply, key) for name, reply in replies.items()]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
    else:
        columns = ("Node", "Peer ID", "Kubo", "Peers", "Private network", "Restart pending")
        table = _table("one-ipfs network", columns)
        for row in rows:
            table.add_row(
                row["node"],
                row["peer_id"] or "-",
                row["version"] or "down",
                str(row["peers"]),
                row["private"],
                "[yellow]yes[/yellow]" if row["restart_pending"] else "no",
            )
        console.print(table)
    sys.exit(0 if all(_healthy(row) for row in rows) else 1)


@main.group()
def cluster() -> None:
    """IPFS Cluster peers beside the frontend's and the storage hosts' Kubo nodes, replicating every image
    version of a datastore with IPFS_CLUSTER_API."""


cluster_options = (
    click.option(
        "--path",
        "folder",
        default=lambda: os.environ.get("IPFS_CLUSTER_PATH", "~/.ipfs-cluster"),
        show_default="$IPFS_CLUSTER_PATH or ~/.ipfs-cluster",
        help="The frontend's IPFS Cluster peer folder.",
    ),
    click.option(
        "--host-path",
        "host_folder",
        default=HOST_CLUSTER,
        show_default=True,
        help="Each storage host's IPFS Cluster peer folder (as oneadmin sees it).",
    ),
    click.option(
        "--rest-api",
        help="The frontend peer's REST API, on loopback (default: as before, else /ip4/127.0.0.1/tcp/9094).",
    ),
    click.option(
        "--unit",
        default=CLUSTER_UNIT,
        show_default=True,
        help="The systemd unit that runs each node's cluster peer; changed peers where it is active are "
        "restarted.",
    ),
    click.option(
        "--kubo-unit",
        default=DAEMON_UNIT,
        show_default=True,
        help="The systemd unit of each node's Kubo daemon, which the cluster peer's unit starts after.",
    ),
    click.option(
        "--systemd-unit",
        is_flag=True,
        help="Also write the --unit systemd unit that runs each node's cluster peer (as its folder's owner), "
        "then enable and start it, or restart it (root or password-less sudo).",
    ),
)


def _cluster_command(command: Callable[..., None]) -> Callable[..., None]:
    """The options every ``cluster init|join`` takes: where the nodes' peers, repositories and APIs are."""
    for option in reversed(
        (one_location_option, repo_option, host_repo_option, api_options[0], api_options[1], *cluster_options)
    ):
        command = option(command)
    return command


@cluster.command("init")
@click.option("--hosts", required=True, help="Comma-separated storage hosts that keep replicas.")
@click.option("--address", help="The frontend peer's storage-network address (default: its Kubo node's).")
@click.option(
    "--frontends",
    default="",
    help="Comma-separated second frontends (OpenNebula HA), reached over ssh like hosts: every peer trusts "
    "their peers too, and each serves the REST API on its own loopback, for the drivers there.",
)
@_cluster_command
def cluster_init(*, hosts: str, address: str | None, frontends: str, **where: Any) -> None:
    """Create the cluster's secret (once) and make the frontend's, the second frontends' and the storage
    hosts' peers one cluster."""
    if address is not None:
        _run(lambda: _ipv4(address))
    _cluster_configure(
        hosts.split(","), address, new_cluster=True, frontends=_node_names(frontends.split(",")), **where
    )


@cluster.command("join")
@click.argument("new_hosts", nargs=-1, required=True)
@_cluster_command
def cluster_join(*, new_hosts: tuple[str, ...], **where: Any) -> None:
    """Add the storage hosts NEW_HOSTS to the frontend's cluster (the peers it knows stay)."""
    _cluster_configure(list(new_hosts), None, new_cluster=False, **where)


@cluster.command("status")
@one_location_option
@click.option(
    "--cluster-api",
    help=f"The frontend peer's REST API (default: IPFS_CLUSTER_API of ipfs.conf, else {CLUSTER_REST_API}).",
)
@json_option
def cluster_status(cluster_api: str | None, as_json: bool) -> None:
    """The cluster's peers and the health of its pins (exit 1 when a peer is in error or a pin is held by
    fewer peers than its minimum)."""
    api = _cluster_api(cluster_api)
    found = _run(lambda: replication_cluster.health(ClusterClient(api, timeout=CLUSTER_TIMEOUT)))
    problems = found.problems()
    if as_json:
        peers = [asdict(member) for member in found.members]
        pins = [
            {
                "cid": pin.cid,
                "name": pin.name,
                "minimum": minimum,
                "held_by": pin.holders(),
                "peers": [asdict(p) for p in pin.peers],
            }
            for pin, minimum in found.pins
        ]
        click.echo(
            json.dumps({"ok": not problems, "peers": peers, "pins": pins, "problems": problems}, indent=2)
        )
    else:
        table = _table("IPFS Cluster peers", ("Peer", "ID", "State"))
        for member in found.members:
            table.add_row(
                member.name, member.peer, f"[red]{escape(member.error)}[/red]" if member.error else "ok"
            )
        console.print(table)
        pins_table = _table("IPFS Cluster pins", ("CID", "Name", "Held by", "Minimum"))
        for pin, minimum in found.pins:
            held = pin.holders()
            shown = ", ".join(held) or "-"
            pins_table.add_row(
                pin.cid,
                pin.name,
                shown if len(held) >= minimum else f"[yellow]{shown}[/yellow]",
                str(minimum),
            )
        console.print(pins_table)
        for problem in problems:
            errors.print(f"[yellow]{escape(problem)}[/yellow]", highlight=False)
    sys.exit(1 if problems else 0)


@cluster.command("recover")
@one_location_option
@click.option(
    "--cluster-api",
    help=f"The frontend peer's REST API (default: IPFS_CLUSTER_API of ipfs.conf, else {CLUSTER_REST_API}).",
)
@click.option(
    "--timeout",
    type=click.FloatRange(1, 86400),
    default=600,
    show_default=True,
    help="Seconds to wait for every pin to be held by its minimum of peers again.",
)
@json_option
def cluster_recover(cluster_api: str | None, timeout: float, as_json: bool) -> None:
    """Bring every pin held by fewer peers than its minimum back to it (after a peer's Kubo repository was
    lost or replaced, or a peer left for good), and wait for it (exit 1 naming the pins still short)."""
    api = _cluster_api(cluster_api)
    asked, left = _run(
        lambda: replication_cluster.restore(ClusterClient(api, timeout=CLUSTER_TIMEOUT), timeout)
    )
    if as_json:
        click.echo(json.dumps({"ok": not left, "recovered": asked, "problems": left}, indent=2))
    else:
        console.print(
            f"{len(asked) - len(left)} of {len(asked)} under-replicated pins held by their minimum again"
        )
        for problem in left:
            errors.print(f"[yellow]{escape(problem)}[/yellow]", highlight=False)
    sys.exit(1 if left else 0)


def _cluster_api(given: str | None) -> str:
    """``--cluster-api``, else the one ipfs.conf gives the datastores, else the default."""
    return given or read_defaults(Site.find().remotes / DEFAULTS).get("IPFS_CLUSTER_API") or CLUSTER_REST_API


def _cluster_configure(
    hosts: list[str],
    address: str | None,
    *,
    new_cluster: bool,
    frontends: tuple[str, ...] = (),
    repo: str,
    host_repo: str,
    api: str | None,
    host_api: str | None,
    folder: str,
    host_folder: str,
    rest_api: str | None,
    unit: str,
    kubo_unit: str,
    systemd_unit: bool,
) -> None:
    _run(lambda: [_unit_name(name) for name in (unit, kubo_unit)])
    rest = None if rest_api is None else _run(lambda: _loopback_api(rest_api))
    names = list(_node_names(hosts))
    if not names:
        _run(_no_hosts)
    kubo_apis = doctor_checks.Target(Site.find(), repo, host_repo, api, host_api).apis()
    places = replication_cluster.Places(folder, host_folder, repo, host_repo, *kubo_apis)
    request = replication_cluster.unit_request(places, unit, kubo_unit)
    _configure_daemons(
        ("IPFS Cluster", "IPFS Cluster peer", unit),
        len({*frontends, *names}) + 1,
        lambda tick: replication_cluster.join(
            places, names, address, rest, new_cluster=new_cluster, frontends=frontends, progress=tick
        ),
        (lambda done, tick: private_network.daemon_units(done, request, tick)) if systemd_unit else None,
    )


def _node_names(given: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Host names as given (blanks left out, each once), or one line naming the bad one."""
    return _run(lambda: tuple(dict.fromkeys(host_label(name.strip()) for name in given if name.strip())))


def _loopback_api(api: str) -> str:
    """``--rest-api`` grants control of the cluster's pinset: a loopback address only, as a multiaddr."""
    host, _ = parse_api(api, "IPFS Cluster REST API")
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise InvalidInput(
            f"--rest-api must listen on a loopback address such as 127.0.0.1, not {api[:80]!r}"
        )
    return replication_cluster.multiaddr(api)


def _no_hosts() -> None:
    raise InvalidInput("name at least one storage host that keeps replicas")


def _configure(
    names: list[str],
    repo: str,
    host_repo: str,
    address: str | None,
    unit: str,
    *,
    new_network: bool,
    systemd_unit: bool,
) -> None:
    _configure_daemons(
        ("private IPFS network", "Kubo daemon", unit),
        len(names) + 1,
        lambda tick: private_network.join(
            repo, host_repo, names, address, new_network=new_network, progress=tick
        ),
        (lambda done, tick: private_network.install_units(done, repo, host_repo, unit, tick))
        if systemd_unit
        else None,
    )


def _configure_daemons(
    what: tuple[str, str, str],
    nodes: int,
    configure: Callable[[Tick], Configured],
    install_units: Callable[[Configured, Tick], Configured] | None,
) -> None:
    """Configure every node (two remote steps each), then have its daemon run the new settings: through
    the systemd units ``install_units`` writes, or a restart where the unit is active; show the outcome.
    ``what``: the table's title, the daemon's name and its unit's."""
    title, daemon, unit = what
    configured = _with_progress("Configuring nodes", 2 * nodes, False, configure)
    if install_units is not None:
        configured = _with_progress(
            "Installing systemd units", len(configured), False, lambda tick: install_units(configured, tick)
        )
    else:
        pending = sum(state.restart_pending for state in configured.values())
        configured = _with_progress(
            f"Restarting the {daemon}s",
            pending,
            False,
            lambda tick: private_network.restart(configured, unit, tick),
        )
    table = _table(title, ("Node", "Configuration", daemon))
    for name, state in configured.items():
        outcome = (
            f"[red]failed[/red] ({escape(state.restart)})"
            if state.failed
            else f"[yellow]restart needed[/yellow] ({state.restart or 'not restarted'})"
            if state.restart_pending
            else state.restart or "runs these settings"
        )
        table.add_row(name, "changed" if state.changed else "unchanged", outcome)
    console.print(table)
    waiting = [name for name, state in configured.items() if state.restart_pending]
    if waiting:
        console.print(
            f"Restart the {daemon} of {', '.join(waiting)}: they run without these settings until then. "
            "Then run `one-ipfs doctor`."
        )
    if any(state.failed for state in configured.values()):
        sys.exit(1)


def _healthy(row: dict[str, Any]) -> bool:
    """A node counts when its daemon answers and it holds the frontend's swarm key."""
    return row["version"] is not None and row["private"] == "yes"


def _status_row(name: str, reply: Reply[NodeFacts], key: str | None) -> dict[str, Any]:
    facts = reply.result
    if facts is None:
        row = dict.fromkeys(("peer_id", "version"), None)
        return {"node": name, **row, "peers": 0, "private": reply.error, "restart_pending": False}
    held = facts.repo.swarm_key
    private = "no swarm.key" if held is None else "yes" if held == key else f"other key ({held})"
    return {
        "node": name,
        "peer_id": facts.daemon.peer_id or facts.repo.peer_id,
        "version": facts.daemon.version,
        "peers": len(facts.daemon.peers),
        "private": private,
        "restart_pending": facts.repo.restart_pending,
    }


def _table(title: str, columns: tuple[str, ...]) -> Table:
    """Long values (paths, peer IDs, CIDs, reasons) fold onto more lines in a terminal, never cut short."""
    table = Table(title=title)
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


def _site(oned_conf: str | None) -> Site:
    site = Site.find()
    return Site(site.remotes, site.oned_conf if oned_conf is None else type(site.oned_conf)(oned_conf))


def _show_change(change: installer.Change, dry_run: bool, action: str) -> None:
    """Plain lines, never wrapped: the diff stays a valid patch and the paths stay whole."""
    colours = {} if console.no_color else {"+": "green", "-": "red", "@": "cyan"}
    for edited in change.files:
        if edited.diff:
            click.echo(f"{edited.path.name} {'would change' if dry_run else 'changed'}: {edited.path}")
            for line in edited.diff.splitlines(keepends=True):
                colour = colours.get(line[:1])
                click.echo(click.style(line, fg=colour) if colour else line, nl=False)
        else:
            click.echo(f"{edited.path.name} {edited.path}: nothing to change")
        if edited.backup is not None:
            click.echo(f"backup of the original: {edited.backup}")
    done = {"install": ("wrote", "would write"), "uninstall": ("removed", "would remove")}[action]
    for path in change.remotes:
        click.echo(f"{done[dry_run]} {path}")
    if not dry_run:
        click.echo(NEXT_STEPS)


def _with_progress(title: str, total: int, quiet: bool, work: Callable[[Tick], T]) -> T:
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[node]}"),
        console=errors,
        transient=True,
        disable=quiet or not errors.is_terminal,
    ) as progress:
        task = progress.add_task(title, total=total, node="")

        def tick(reply: Reply[Any]) -> None:
            progress.update(task, advance=1, node=reply.node)

        return _run(lambda: work(tick))


def _interpreter(python: str) -> str:
    """``--python`` is written into ipfs.conf as ``ONE_IPFS_PYTHON="..."``: a path, no quoting or lines;
    and the drivers will run under it, so it must run this one_ipfs."""
    if not python or not all(char.isalnum() or char in "/._+-" for char in python):
        raise InvalidInput(f"--python must be the path of a Python interpreter, not {python[:80]!r}")
    problem = interpreter_problem(python)
    if problem is not None:
        raise InvalidInput(f"--python {python} cannot run the drivers: {problem}")
    return python


def _unit_name(unit: str) -> str:
    """``--unit`` names a file in the systemd folder and a systemctl argument: a plain unit name only."""
    if not UNIT_NAME.match(unit):
        raise InvalidInput(f"--unit must be a systemd unit name such as ipfs, not {unit[:80]!r}")
    return unit


def _ipv4(address: str) -> str:
    """``--address`` becomes part of every node's peer list: an IPv4 address and nothing else."""
    try:
        return str(ipaddress.IPv4Address(address))
    except ValueError:
        raise InvalidInput(f"--address must be an IPv4 address, not {address[:80]!r}") from None


def _run(work: Callable[[], T]) -> T:
    """Run ``work``; a one-ipfs error becomes its one line on stderr and exit status 1."""
    try:
        return work()
    except OneIpfsError as exc:
        errors.print(f"[red]Error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(1)
