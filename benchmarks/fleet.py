"""Fleet deploy: one image to N hosts at once over rate-limited links, vs one host and vs ssh.

Every link, the frontend's included, is limited (``Bed.set_rate``). The physical floor of a deploy to N
hosts is the time one host needs, since each host receives the image over its own link; OpenNebula's ssh
driver streams the file from the frontend to each host, so its makespan grows with N on the frontend's
link. IPFS lets the hosts fetch blocks from each other as well as from the frontend.
"""

from __future__ import annotations

import json
from functools import partial

from benchmarks.common import Bench, Check, Figure, Params, concurrently, write_image
from one_ipfs.errors import HostError
from testbed.kubo import EXPERIMENTAL

SSH_TARGET = "/var/lib/one/bench-ssh.img"
EXPERIMENTAL_HOSTS = 4


def run(bench: Bench, params: Params) -> Figure:
    top = max(params.fleet_hosts)
    figure = Figure(
        "fleet",
        f"Fleet deploy of one {params.fleet_mib} MiB image, links at {params.fleet_rate_mbit:g} Mbit/s",
        "ipfs: `onevm deploy` of one VM per host, all at once (the simulator's PROLOG, TM `clone` on "
        "each host); makespan from the first request to the last disk written. ssh: "
        f"`ssh hK dd of={SSH_TARGET}` from the frontend as oneadmin, the image on stdin, N at once "
        "(OpenNebula's ssh TM streams the file that way). A fresh image for every deploy, so every host "
        "starts cold. Frontend sent: delta of DataSent in the frontend's `ipfs bitswap stat` across the "
        "IPFS deploys, over the image size (1 would be each block leaving the frontend once).",
    )
    targets = ["frontend", *(host.name for host in bench.bed.hosts)]
    for target in targets:
        bench.bed.set_rate(target, params.fleet_rate_mbit)
    try:
        for _ in range(params.repetitions):
            single = None
            for count in params.fleet_hosts:
                hosts = [f"h{k}" for k in range(1, count + 1)]
                sent = _frontend_sent(bench)
                ipfs = _ipfs_makespan(bench, params.fleet_mib, hosts)
                sent = _frontend_sent(bench) - sent
                ssh = _ssh_makespan(bench, params.fleet_mib, hosts)
                single = ipfs if count == 1 else single
                figure.measure(f"ipfs makespan, N={count}", "s").samples.append(ipfs)
                figure.measure(f"ssh makespan, N={count}", "s").samples.append(ssh)
                figure.measure(f"ssh / ipfs, N={count}", "x").samples.append(ssh / ipfs)
                figure.measure(f"frontend sent / image, N={count}", "x").samples.append(
                    sent / (params.fleet_mib << 20)
                )
                if single is not None:
                    figure.measure(f"ipfs N={count} / ipfs N=1", "x").samples.append(ipfs / single)
    finally:
        for target in targets:
            bench.bed.set_rate(target, None)
    growth = 1.3 if top >= 16 else 1.2  # issue 20's targets: 1.2x at N = 8, 1.3x at N = 16
    figure.checks += [
        Check(f"makespan at N={top} <= {growth}x the N=1 time", f"ipfs N={top} / ipfs N=1", growth),
        Check(f"ipfs >= 6x faster than ssh at N={top}", f"ssh / ipfs, N={top}", 6.0, at_most=False),
    ]
    return figure


def run_without_experimental(bench: Bench, params: Params) -> Figure:
    """The fleet deploy at N = 4 (or the largest N below) with all of Kubo's experimental features on, then
    with each off, then all off: what each one buys (a future Kubo may drop any of them). Three runs of
    each at most: five cases a run, each restarting every node."""
    count = min(EXPERIMENTAL_HOSTS, max(params.fleet_hosts))
    hosts = [f"h{k}" for k in range(1, count + 1)]
    cases: list[tuple[str, tuple[str, ...]]] = [
        ("all on", ()),
        *((f"without {feature}", (feature,)) for feature in EXPERIMENTAL),
        ("all off", tuple(EXPERIMENTAL)),
    ]
    figure = Figure(
        "fleet_experimental",
        f"Fleet deploy of one {params.fleet_mib} MiB image to {count} hosts without Kubo's experimental "
        f"features, links at {params.fleet_rate_mbit:g} Mbit/s",
        "As the fleet figure's ipfs deploy, at one N, with every node (frontend's included) restarted with "
        "`Pubsub.Enabled` and `Ipns.UsePubsub` (pubsub), `Experimental.Libp2pStreamMounting` (p2p) or "
        "`Experimental.P2pHttpProxy` (http-proxy) false (`Bed.switch_off`); each repetition runs every "
        "case in turn, so the ratios to all on come from the same minutes of a shared machine.",
    )
    targets = ["frontend", *hosts]
    for target in targets:
        bench.bed.set_rate(target, params.fleet_rate_mbit)
    try:
        for _ in range(min(params.repetitions, 3)):
            makespans = {}
            for case, off in cases:
                bench.bed.switch_off(off)
                sent = _frontend_sent(bench)
                makespans[case] = _ipfs_makespan(bench, params.fleet_mib, hosts)
                sent = _frontend_sent(bench) - sent
                figure.measure(f"makespan, {case}", "s").samples.append(makespans[case])
                figure.measure(f"frontend sent / image, {case}", "x").samples.append(
                    sent / (params.fleet_mib << 20)
                )
                if off:
                    figure.measure(f"makespan {case} / all on", "x").samples.append(
                        makespans[case] / makespans["all on"]
                    )
    finally:
        bench.bed.switch_off(())
        for target in targets:
            bench.bed.set_rate(target, None)
    return figure


def _ipfs_makespan(bench: Bench, size_mib: int, hosts: list[str]) -> float:
    image = bench.image(size_mib)
    vms = []
    try:

        def deploy(host: str) -> None:
            vms.append(bench.deploy(image, host))

        return concurrently([partial(deploy, host) for host in hosts])
    finally:
        cid = bench.cid(image)
        for vm in vms:
            bench.one.vm_terminate(vm)
        bench.forget_on_hosts(cid, hosts)
        bench.drop(image)


def _frontend_sent(bench: Bench) -> int:
    """Bytes the frontend's node has sent over bitswap since it started."""
    return int(json.loads(bench.ipfs(None, ["bitswap", "stat", "--enc=json"]))["DataSent"])


def _ssh_makespan(bench: Bench, size_mib: int, hosts: list[str]) -> float:
    path = write_image(bench.workdir / "ssh.img", size_mib, bench.next_seed())
    data = path.read_bytes()
    path.unlink()
    bed = bench.bed

    def stream(host: str) -> None:
        done = bed.ssh(bed.host(host), ["dd", f"of={SSH_TARGET}", "bs=1M", "status=none"], input=data)
        if done.returncode != 0:
            raise HostError(f"ssh to {host} failed: {done.stderr.decode(errors='replace').strip()}")

    try:
        return concurrently([partial(stream, host) for host in hosts])
    finally:
        for host in hosts:
            (bed.host(host).var_lib_one / "bench-ssh.img").unlink(missing_ok=True)
