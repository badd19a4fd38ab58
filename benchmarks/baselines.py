"""Fleet deploys under genuine oned 7.4.0: OpenNebula's own ways to ship one image to N hosts beside ours.

Same bed, same links (every one rate-limited, as in the fleet figure), same kind of image, one run. Each
system deploys a fresh image (cold) to N hosts at once, then a second version of it with 5% of its blocks
changed (warm: every host has just deployed the first). OpenNebula's systems run its own scripts from
OpenNebula's source as oned orders them: the ``ssh`` TM plain, the ``local`` TM with its image cache
(``CACHE_ENABLE``, two upstream cache hosts) and the ``ssh`` TM in replica mode (``REPLICA_HOST``). The
cache's upstreams and the replica host are bed hosts outside the fleet: OpenNebula's cache locks an image
on a host while it asks the upstreams, so two upstreams that deploy at the same time wait on each other.
"""

from __future__ import annotations

import random
import statistics
import time
import xmlrpc.client
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from xml.etree import ElementTree

from benchmarks.common import WORKDIR, Bench, Check, Figure, Params, concurrently, stopwatch, write_image
from one_ipfs.errors import HostError
from testbed.genuine import GenuineOne, start_cloud
from testbed.one import Image
from testbed.one.documents import History

VERSION = "7.4.0"
IMAGE_MIB = 64
"""The image, in every mode: at 100 Mbit/s a 64 MiB image keeps the links the bottleneck, and five systems
at N up to 4 (8), cold and warm, three times, take an hour (two); 256 MiB would take four times that."""
REPETITIONS = 3
"""At most: the issue's medians of three (the full mode's five would double the hour)."""
CHANGED = 0.05
"""Share of the blocks the warm image's second version changes (as the update figure)."""
SPARE_HOSTS = 2
"""Bed hosts beyond the fleet: the cache's two upstreams, the first of them also the replica host."""
WAIT = 900.0
POLL = 0.1
END_TO_END = "create to RUNNING"
"""A cold round's time from ``oneimage create`` to the last VM RUNNING (issue 20's end to end)."""
TERMINATE_AGAIN = 5.0
"""Seconds before a VM still RUNNING while the round is cleaned up is sent ``terminate`` again."""
RUNNING, DONE = ("3", "3"), "6"
FAILED_LCM = {"36", "39", "40", "44", "45", "46", "47", "48", "49", "50"}
"""oned's LCM states ending in _FAILURE: a deploy that stops there never becomes RUNNING."""


@dataclass(frozen=True)
class System:
    """One way to deploy: the image datastore a fresh image goes to and the system datastore VMs run in."""

    name: str
    image_ds: int
    system_ds: int
    ipfs: bool


@dataclass(frozen=True)
class Deploy:
    """One fleet deploy on the wall clock (seconds since the epoch): the first ``onevm deploy`` sent, each
    VM's prolog as oned's history records it (whole seconds), and the last VM seen RUNNING."""

    ordered: float
    prologs: tuple[History, ...]
    running: float

    @property
    def makespan(self) -> float:
        return self.running - self.ordered

    def profile(self) -> dict[str, float]:
        """What the makespan is made of: oned's dispatch of the deploys (to the first prolog start, and
        the spread of the starts), the prologs (the TM's transfers), and the boot after the last one."""
        starts = [history.prolog_start for history in self.prologs]
        ends = [history.prolog_end for history in self.prologs]
        durations = [end - start for start, end in zip(starts, ends, strict=True)]
        return {
            "deploy to first prolog start": min(starts) - self.ordered,
            "prolog starts spread": max(starts) - min(starts),
            "prolog median": statistics.median(durations),
            "prolog max": max(durations),
            "last prolog end to RUNNING": self.running - max(ends),
        }


def hosts_needed(params: Params) -> int:
    return max(params.fleet_hosts) + SPARE_HOSTS


def run(bench: Bench, params: Params) -> Figure:
    figure = Figure(
        "baselines",
        f"Fleet deploy under genuine oned {VERSION}: OpenNebula's ssh TM, its image cache and replica mode, "
        f"and ours; one {IMAGE_MIB} MiB image, links at {params.fleet_rate_mbit:g} Mbit/s",
        "For each N and system: a fresh image imported with `oneimage create --path` into the system's image "
        "datastore, N VMs created on hold, then `onevm deploy` of all N at once (each VM on its own host, "
        "into the system's system datastore); makespan from the first `onevm deploy` to the last VM "
        "RUNNING (oned's own state, polled over XML-RPC every 0.1 s; it includes the KVM stand-in's boot, "
        "the same for every system). Cold: the first image; warm: right after, a second version of it "
        f"({CHANGED:.0%} of its 1 MiB blocks changed) imported as a new image and deployed to the same N "
        "hosts. Create to RUNNING (cold): from `oneimage create` of the fresh image (file already written) "
        "to the last of the N VMs RUNNING: the import until the image is READY, `onevm create --hold`, "
        "then the deploy. The deploy's profile, from each VM's history in oned (PSTIME, PETIME: whole "
        "seconds, so each is +-1 s): deploy to first prolog start (the `onevm deploy` commands reaching "
        "oned), prolog starts spread (first to last PSTIME: oned's dispatch), prolog median and max "
        "(PSTIME to PETIME: the TM's clone and the rest of the prolog), last prolog end to RUNNING (the "
        "boot and oned's seeing it). Frontend sent: bytes out of the frontend's link (its bridge port's "
        "counters, TCP/IP and cipher overhead included) over the image size; per host: bytes into each "
        "fleet host's link, median over the fleet, over the image size. Between rounds VMs are "
        "terminated, images deleted, and every cache (IPFS pins, OpenNebula's image cache and replica "
        "copies) emptied.",
    )
    top = max(params.fleet_hosts)
    figure.checks += [
        Check(
            f"ipfs copy faster than {other}, cold, N={top}",
            f"{other} / ipfs copy, cold, N={top}",
            1.0,
            at_most=False,
        )
        for other in ("ssh cache", "ssh replica")
    ]
    figure.checks.append(
        Check(
            f"ipfs copy faster than ssh, oneimage create to {top} VMs RUNNING",
            f"ssh / ipfs copy, create to RUNNING, N={top}",
            1.0,
            at_most=False,
        )
    )
    figure.checks.append(
        Check(
            f"ipfs copy >= 3x faster than the cache, warm, N={top}",
            f"ssh cache / ipfs copy, warm, N={top}",
            3.0,
            at_most=False,
        )
    )
    cloud = start_cloud(lambda: bench.bed, VERSION)
    try:
        systems = _systems(bench, cloud)
        links = ["frontend", *(host.name for host in bench.bed.hosts)]
        for link in links:
            bench.bed.set_rate(link, params.fleet_rate_mbit)
        try:
            for _ in range(min(params.repetitions, REPETITIONS)):
                for count in params.fleet_hosts:
                    makespans = {
                        system.name: _round(bench, cloud, system, params, count, figure) for system in systems
                    }
                    _ratios(figure, count, makespans)
                bench.checkpoint(figure)
        finally:
            for link in links:
                bench.bed.set_rate(link, None)
    finally:
        cloud.frontend.stop()
    return figure


def _systems(bench: Bench, cloud: GenuineOne) -> list[System]:
    """The datastores of each system, created as an admin would (OpenNebula's own templates)."""
    spare = [host.name for host in bench.bed.hosts[-SPARE_HOSTS:]]

    def image_ds(name: str, **attributes: str) -> int:
        return cloud.datastore_create({"NAME": name, **attributes}).id

    def system_ds(name: str, **attributes: str) -> int:
        return cloud.datastore_create({"NAME": name, "TYPE": "SYSTEM_DS", **attributes}).id

    fs_ssh = image_ds("fs-ssh", DS_MAD="fs", TM_MAD="ssh")
    fs_cache = image_ds(
        "fs-local-cache",
        DS_MAD="fs",
        TM_MAD="local",
        CACHE_ENABLE="YES",
        CACHE_UPSTREAMS=",".join(spare),
    )
    ipfs = {"DS_MAD": "ipfs", "TM_MAD": "ipfs", "IPFS_API": bench.bed.frontend.api}
    return [
        System("ssh", fs_ssh, system_ds("sys-ssh", TM_MAD="ssh"), ipfs=False),
        System("ssh cache", fs_cache, system_ds("sys-local", TM_MAD="local"), ipfs=False),
        System("ssh replica", fs_ssh, system_ds("sys-replica", TM_MAD="ssh", REPLICA_HOST=spare[0]), False),
        System("ipfs copy", image_ds("ipfs-copy", **ipfs), 0, ipfs=True),
        System("ipfs overlay", image_ds("ipfs-overlay", IPFS_DEPLOY_MODE="OVERLAY", **ipfs), 0, ipfs=True),
    ]


def _round(
    bench: Bench, cloud: GenuineOne, system: System, params: Params, count: int, figure: Figure
) -> dict[str, float]:
    """A cold deploy of a fresh image to ``count`` hosts, then a warm one of its second version; their
    makespans by phase, and the cold one's from ``oneimage create`` (``END_TO_END``). A deploy of
    OpenNebula's that fails (its replica mode's ``tar`` reading a replica being rewritten under it, seen at
    N = 8) is counted, and leaves its phase without a makespan rather than ending the run; one of ours
    ends it."""
    hosts = [f"h{k}" for k in range(1, count + 1)]
    seed, later = bench.next_seed(), bench.next_seed()
    blocks = random.Random(seed).sample(range(IMAGE_MIB), max(1, round(CHANGED * IMAGE_MIB)))
    images: list[Image] = []
    makespans: dict[str, float] = {}
    try:
        for phase, changed in (("cold", None), ("warm", dict.fromkeys(blocks, later))):
            image, created = _import(bench, cloud, system, IMAGE_MIB, seed, changed)
            images.append(image)
            sent, received = _frontend_sent(bench), _received(bench, hosts)
            label = f"{system.name}, {phase}, N={count}"
            try:
                deploy = _deploy(cloud, system, image, hosts)
            except HostError as exc:
                if system.ipfs:
                    raise
                figure.measure(f"failed deploys: {label}", "rounds").samples.append(1)
                print(f"{label}: failed: {exc}", flush=True)
                continue
            sent = _frontend_sent(bench) - sent
            received = [
                after - before for after, before in zip(_received(bench, hosts), received, strict=True)
            ]
            size = IMAGE_MIB << 20
            makespan = makespans[phase] = deploy.makespan
            figure.measure(f"makespan: {label}", "s").samples.append(makespan)
            if phase == "cold":
                makespans[END_TO_END] = deploy.running - created
                figure.measure(f"{END_TO_END}: {label}", "s").samples.append(makespans[END_TO_END])
            profile = deploy.profile()
            for part, seconds in profile.items():
                figure.measure(f"{part}: {label}", "s").samples.append(seconds)
            figure.measure(f"frontend sent / image: {label}", "x").samples.append(sent / size)
            per_host = sorted(received)[len(received) // 2] / size
            figure.measure(f"per host / image: {label}", "x").samples.append(per_host)
            print(
                f"{label}: {makespan:.1f} s, frontend sent {sent / size:.2f}x, per host {per_host:.2f}x; "
                + ", ".join(f"{part} {seconds:.1f} s" for part, seconds in profile.items()),
                flush=True,
            )
        return makespans
    finally:
        _clean(bench, cloud, system, images, hosts)


def _import(
    bench: Bench, cloud: GenuineOne, system: System, size_mib: int, seed: int, changed: dict[int, int] | None
) -> tuple[Image, float]:
    """The image READY, and when its ``oneimage create`` was sent (seconds since the epoch)."""
    path = write_image(WORKDIR / f"baseline-{seed}-{len(changed or {})}.img", size_mib, seed, changed)
    try:
        name = f"{system.name.replace(' ', '-')}-{seed}-{'v2' if changed else 'v1'}"
        created = time.time()
        return cloud.image_create(system.image_ds, name=name, path=str(path)), created
    finally:
        path.unlink()


def _deploy(cloud: GenuineOne, system: System, image: Image, hosts: Sequence[str]) -> Deploy:
    """Deploying one VM of ``image`` per host at once, timed; the VMs are terminated afterwards. They
    are held by one ``onevm create --multiple``; each goes to a host of its own, so each gets an ``onevm
    deploy`` of its own (``GenuineOne.vms_deploy`` sends many to one host), all at once. Failed VMs of
    OpenNebula's systems are counted, not raised, so they are waited for and cleaned here, not by
    ``vms_deploy``/``vms_terminate``, which raise on the first."""
    vms = cloud.vms_hold([image], len(hosts), context=False)
    frontend = cloud.frontend
    try:
        calls: list[Callable[[], object]] = [
            partial(frontend.cli, ["onevm", "deploy", str(vm), host, str(system.system_ds)])
            for vm, host in zip(vms, hosts, strict=True)
        ]
        ordered = time.time()
        concurrently(calls)
        _wait(cloud, vms, lambda state, lcm: (state, lcm) == RUNNING, "RUNNING")
        running = time.time()
        return Deploy(ordered, tuple(cloud.vm(vm).history[-1] for vm in vms), running)
    finally:
        terminate = [
            partial(frontend.run, ["onevm", "terminate", "--hard", str(vm)], check=False) for vm in vms
        ]
        concurrently(terminate)
        _wait(cloud, vms, lambda state, lcm: state == DONE, "DONE", cleaning=True)


def _wait(
    cloud: GenuineOne,
    vms: Sequence[int],
    reached: Callable[[str, str], bool],
    what: str,
    *,
    cleaning: bool = False,
) -> None:
    """Until every VM of ``vms`` has ``reached`` a state, by oned's VM pool over XML-RPC (one call a poll);
    a VM that failed raises, unless ``cleaning``: it is then deleted with ``onevm recover --delete``, and a
    VM RUNNING is terminated again (oned refuses ``terminate`` while a VM is still in PROLOG, which is where
    its fleet-mates are when another fails)."""
    frontend = cloud.frontend
    server = xmlrpc.client.ServerProxy(f"http://127.0.0.1:{frontend.ports.oned}/RPC2")
    elapsed = stopwatch()
    wanted = {str(vm) for vm in vms}
    terminated: dict[str, float] = {}
    while True:
        answer = server.one.vmpool.info(frontend.auth, -2, min(vms), max(vms), -2)
        if not isinstance(answer, list) or not answer[0]:
            raise HostError(f"oned: one.vmpool.info failed: {answer!r}")
        states = {
            vm.findtext("ID", ""): (vm.findtext("STATE", ""), vm.findtext("LCM_STATE", ""))
            for vm in ElementTree.fromstring(str(answer[1])).findall("VM")
        }
        mine = {oid: states.get(oid, ("", "")) for oid in wanted}
        failed = [oid for oid, (_, lcm) in mine.items() if lcm in FAILED_LCM]
        if failed and not cleaning:
            raise HostError(f"oned: VM {failed[0]} failed: {cloud.vm(int(failed[0])).error}")
        for oid in failed if cleaning else []:
            frontend.run(["onevm", "recover", "--delete", oid], check=False)
        running = [oid for oid, state in mine.items() if state == RUNNING]
        for oid in running if cleaning else []:
            if elapsed() - terminated.get(oid, -TERMINATE_AGAIN) >= TERMINATE_AGAIN:
                terminated[oid] = elapsed()
                frontend.run(["onevm", "terminate", "--hard", oid], check=False)
        if all(reached(*state) for state in mine.values()):
            return
        if elapsed() > WAIT:
            raise HostError(f"oned: VMs {sorted(wanted)} did not reach {what} in time")
        time.sleep(POLL)


def _frontend_sent(bench: Bench) -> int:
    """Bytes the frontend sent: what its bridge port received."""
    return _counter(f"{bench.bed.layout.prefix}-feb", "rx_bytes")


def _received(bench: Bench, hosts: Sequence[str]) -> list[int]:
    """Bytes each host received: what the bridge sent out of its port."""
    return [_counter(f"{bench.bed.layout.netns(host)}a", "tx_bytes") for host in hosts]


def _counter(device: str, name: str) -> int:
    return int(Path(f"/sys/class/net/{device}/statistics/{name}").read_text())


def _clean(
    bench: Bench, cloud: GenuineOne, system: System, images: Sequence[Image], hosts: list[str]
) -> None:
    """Every host cold again: IPFS pins collected, OpenNebula's cache and replica copies removed."""
    cids = [cloud.image(image).template.get("IPFS_CID", "") for image in images] if system.ipfs else []
    for image in images:
        cloud.image_delete(image)
    if system.ipfs:
        for cid in cids:
            bench.forget_on_hosts(cid, hosts)
        bench.bed.frontend.client(timeout=600).repo_gc(timeout=600)
        return
    for host in bench.bed.hosts:
        bench.bed.host_run(
            host, ["rm", "-rf", "/var/lib/one/cache", f"/var/lib/one/datastores/{system.image_ds}"]
        )


def _ratios(figure: Figure, count: int, makespans: dict[str, dict[str, float]]) -> None:
    """Each other system's makespan over ours (COPY), per phase and create to RUNNING, within one
    repetition."""
    ours = makespans["ipfs copy"]
    for name, theirs in makespans.items():
        if name != "ipfs copy":
            for phase, seconds in theirs.items():  # a phase that failed has no makespan
                figure.measure(f"{name} / ipfs copy, {phase}, N={count}", "x").samples.append(
                    seconds / ours[phase]
                )
