"""Backup storage under genuine oned 7.4.0: what a week of daily backups of the same VMs keeps in our ``ipfs``
backup datastore and in OpenNebula's own ``rsync`` and ``restic`` ones.

Bytes, not seconds, are the figure: they do not move with the machine's load. Four VMs are deployed from one
base image; each day every VM's guest changes 2% of its disk, then ``onevm backup`` sends every VM to every
backup datastore: a week of FULL backups, then a week of increments (qcow2 disks). After each day the suite
reads what each datastore holds: for ours, the sum of the unique blocks of every backup DAG it pinned (``ipfs
dag stat``), for rsync its folder on the frontend, for restic its repository on h4 (``du``). Ours runs twice:
as created, with a backup datastore's default 64 KiB chunks (qcow2's cluster size), and with the image
datastores' 1 MiB chunks set on it, which shows why a backup datastore defaults to smaller ones.
"""

from __future__ import annotations

import json
import random
import subprocess
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from benchmarks.common import MIB, Bench, Check, Figure, Params, stopwatch
from one_ipfs.defaults import BACKUP_CHUNKER, CHUNKER
from testbed.genuine import GenuineOne, start_cloud
from testbed.one import Datastore, Image, VirtualMachine
from testbed.one.documents import parse_xml
from tests.support.datastores import ipfs_datastore_template, restic_backup_template, rsync_backup_template
from tests.support.images import disk_bytes
from tests.support.vms import guest_write, image_from

VERSION = "7.4.0"
DISK_MIB = 64
"""The base image: 64 KiB of random data, 64 KiB of zeros, repeated (``disk_bytes``), as a disk with free
space; small enough for the two weeks of backups to take about 15 minutes."""
VMS = 4
DAYS = 7
CHANGED = 0.02
"""Share of the disk each guest writes a day."""
WRITE = 64 << 10
"""Each write: 64 KiB of new random bytes at a random 4 KiB-aligned offset (a guest writes extents, not
scattered pages)."""
ALIGN = 4 << 10
SEED = 18
HOSTS = 4
"""h1-h4 hold one VM each; h3's node holds the base image (``image_from``), h4 restic's repository."""
MODES = {"FULL": "COPY", "INCREMENT": "OVERLAY"}
"""Each BACKUP_CONFIG MODE and the IPFS_DEPLOY_MODE of its VMs' disks: increments need qcow2 disks."""
KINDS = {"FULL": "full", "INCREMENT": "increments"}
OURS = "ipfs"
"""Our backup datastore as created, its settings the defaults: the one the checks compare."""
OURS_IMAGE_CHUNKS = "ipfs 1 MiB"
"""The same with the image datastores' chunks set on it, for what a backup datastore's own default buys."""
THEIRS = ("rsync", "restic")
VAR_LIB_ONE = Path("/var/lib/one")


@dataclass(frozen=True)
class Store:
    """One backup datastore and how to read the bytes it keeps: ``stored(backups made so far)``."""

    name: str
    datastore: Datastore
    stored: Callable[[Sequence[Image]], int]


def run(bench: Bench, params: Params) -> Figure:
    writes = round(CHANGED * DISK_MIB * MIB / WRITE)
    figure = Figure(
        "backups",
        f"A week of daily backups of {VMS} VMs of one {DISK_MIB} MiB image, {CHANGED:.0%} of each disk "
        f"changed a day, under genuine oned {VERSION}: the bytes each backup datastore keeps",
        f"One base image ({DISK_MIB} MiB, 64 KiB runs of random data and of zeros alternating) in an "
        f"`ipfs` image datastore; {VMS} VMs deployed from it, one per host, powered off. Each day "
        f"every VM's guest writes {writes} times {WRITE >> 10} KiB of random bytes at random "
        f"{ALIGN >> 10} KiB-aligned offsets (`qemu-io`, seed {SEED}: {CHANGED:.0%} of the disk a day, "
        "the same writes in both modes), then `onevm backup` sends each VM into each backup "
        "datastore, the four VMs at once. Full: BACKUP_CONFIG MODE=FULL, raw disks (COPY); increments: "
        "MODE=INCREMENT, qcow2 disks (an OVERLAY datastore), the first backup full, then one "
        "increment a day; an incremental chain stays in its first datastore, so each datastore has "
        "four VMs of its own there, whose guests write the same bytes. No KEEP_LAST: after day "
        f"{DAYS} each datastore holds {VMS * DAYS} backups "
        "(or increments). Each mode has its own four backup datastores. Stored after day d: what a "
        "datastore keeps for every backup so far. ipfs: the bytes of the unique blocks of all backup "
        "DAGs (`ipfs dag stat` of every backup's, every increment's CID on the frontend's node; "
        "UnixFS framing included), the datastore created without an `IPFS_CHUNKER`, so with a "
        f"backup datastore's default chunks ({BACKUP_CHUNKER}, qcow2's cluster size); ipfs 1 MiB: the "
        f"same with `IPFS_CHUNKER={CHUNKER}`, image datastores' default, set on it. rsync: its folder "
        "on the frontend (`du --apparent-size`; the allocated blocks after the last day beside it). "
        "restic: its repository on h4 (`du --apparent-size`; restic deduplicates by content-defined "
        "chunks and compresses). Ratios: OpenNebula's datastore's bytes over ours after day "
        f"{DAYS}. Backup time: each `onevm backup` until the VM is back in POWEROFF, four at once.",
    )
    cloud = start_cloud(lambda: bench.bed, VERSION)
    try:
        bed = bench.bed
        base = disk_bytes(DISK_MIB * MIB, seed=SEED)
        for mode, deploy in MODES.items():
            template = ipfs_datastore_template(bed, f"ipfs-{deploy.lower()}", IPFS_DEPLOY_MODE=deploy)
            image = image_from(bed, cloud, cloud.datastore_create(template), base, f"base-{mode}")
            _week(bench, cloud, figure, mode, image)
    finally:
        cloud.frontend.stop()
    figure.checks += [
        Check(
            f"{OURS} stores less than {other} after {DAYS} days, {KINDS[mode]}",
            f"{other} / {OURS}, {KINDS[mode]}, day {DAYS}",
            1.0,
            at_most=False,
        )
        for mode in MODES
        for other in THEIRS
    ]
    return figure


def _week(bench: Bench, cloud: GenuineOne, figure: Figure, mode: str, image: Image) -> None:
    """VMS VMs of ``image`` per fleet; DAYS times, a day of guest writes, then each fleet backed up into its
    datastores. FULL backs one fleet up into every datastore; an incremental chain stays in the datastore
    of its first backup (oned ignores ``-d`` until ``--reset``), so each INCREMENT datastore has a fleet of
    its own, whose guests write the same bytes."""
    kind = KINDS[mode]
    stores = _stores(bench, cloud, kind)
    shared = _fleet(cloud, image, mode) if mode == "FULL" else []
    fleets = {store.name: shared or _fleet(cloud, image, mode) for store in stores}
    vms = shared or [vm for fleet in fleets.values() for vm in fleet]
    made: dict[str, list[Image]] = {store.name: [] for store in stores}
    for day in range(1, DAYS + 1):
        for number, vm in enumerate(vms):
            _guest_day(bench, cloud, vm, random.Random(f"{SEED}-{day}-{number % VMS}"))
        for store in stores:
            with ThreadPoolExecutor(VMS) as pool:
                made[store.name] += pool.map(partial(_backup, cloud, store, figure, kind), fleets[store.name])
            stored = store.stored(made[store.name]) / MIB
            figure.measure(f"stored after day {day}, {kind}: {store.name}", "MiB").samples.append(stored)
    last = {
        store.name: figure.measure(f"stored after day {DAYS}, {kind}: {store.name}", "MiB").median
        for store in stores
    }
    for ours in (OURS, OURS_IMAGE_CHUNKS):
        for other in THEIRS:
            ratio = last[other] / last[ours]
            figure.measure(f"{other} / {ours}, {kind}, day {DAYS}", "x").samples.append(ratio)
    rsync = next(store for store in stores if store.name == "rsync")
    allocated = _du(_frontend_path(bench, rsync.datastore), apparent=False) / MIB
    figure.measure(f"stored after day {DAYS}, {kind}: rsync, allocated blocks", "MiB").samples.append(
        allocated
    )
    with ThreadPoolExecutor(VMS) as pool:
        list(pool.map(cloud.vm_terminate, vms))


def _fleet(cloud: GenuineOne, image: Image, mode: str) -> list[VirtualMachine]:
    """VMS VMs of ``image``, one per host, powered off, backed up in ``mode``."""
    hosts = [f"h{k}" for k in range(1, VMS + 1)]
    with ThreadPoolExecutor(VMS) as pool:
        vms = list(pool.map(lambda host: cloud.vm_poweroff(cloud.vm_deploy([image], host)), hosts))
    for vm in vms:
        cloud.vm_backup_config(vm, {"MODE": mode})
    return vms


def _stores(bench: Bench, cloud: GenuineOne, kind: str) -> list[Store]:
    """The backup datastores of one mode, created as an admin would (OpenNebula's own templates for its
    drivers); each mode has its own, so that a folder's size counts that mode's backups only."""
    bed = bench.bed

    def ipfs(name: str, **attributes: str) -> Datastore:
        template = ipfs_datastore_template(bed, f"{name}-{kind}", TYPE="BACKUP_DS", TM_MAD="-", **attributes)
        return cloud.datastore_create(template)

    rsync = cloud.datastore_create(rsync_backup_template(f"rsync-backups-{kind}"))
    restic = cloud.datastore_create(restic_backup_template(f"restic-backups-{kind}"))
    return [
        Store(OURS, ipfs("ipfs-backups"), lambda made: _unique_bytes(bench, cloud, made)),
        Store(
            OURS_IMAGE_CHUNKS,
            ipfs("ipfs-backups-1m", IPFS_CHUNKER=CHUNKER),
            lambda made: _unique_bytes(bench, cloud, made),
        ),
        Store("rsync", rsync, lambda made: _du(_frontend_path(bench, rsync))),
        Store("restic", restic, lambda made: _du_on(bench, "h4", restic)),
    ]


def _guest_day(bench: Bench, cloud: GenuineOne, vm: VirtualMachine, rng: random.Random) -> None:
    """A day of the guest's writes: CHANGED of the disk, WRITE bytes at a time, at random aligned offsets
    (through qemu-io, which keeps a qcow2 disk's changed-block bitmaps as the hypervisor would)."""
    for _ in range(round(CHANGED * DISK_MIB * MIB / WRITE)):
        offset = rng.randrange(0, DISK_MIB * MIB - WRITE, ALIGN)
        guest_write(bench.bed, cloud, vm, offset, rng.randbytes(WRITE))


def _backup(cloud: GenuineOne, store: Store, figure: Figure, kind: str, vm: VirtualMachine) -> Image:
    elapsed = stopwatch()
    backup = cloud.vm_backup(vm, store.datastore)
    figure.measure(f"backup time, {kind}: {store.name}", "s").samples.append(elapsed())
    return backup


def _unique_bytes(bench: Bench, cloud: GenuineOne, backups: Sequence[Image]) -> int:
    """The bytes of the blocks the backups' DAGs hold, each block once: every FULL backup's, every increment
    of an incremental one (a SOURCE is ``<token>-<cid>``)."""
    sources = []
    for oid in {backup.id for backup in backups}:
        current = parse_xml(cloud.image(oid).xml)
        increments = current.findall("BACKUP_INCREMENTS/INCREMENT/SOURCE")
        sources += [node.text or "" for node in increments] or [current.findtext("SOURCE", "")]
    cids = [source.rpartition("-")[2] for source in sources]
    answer = bench.ipfs(None, ["dag", "stat", "--progress=false", "--enc=json", *cids])
    return int(json.loads(answer)["TotalSize"])


def _frontend_path(bench: Bench, datastore: Datastore) -> Path:
    """A datastore's BASE_PATH (under /var/lib/one as the frontend sees it) in the root namespace."""
    return bench.bed.frontend_var_lib_one / Path(datastore.base_path).relative_to(VAR_LIB_ONE)


def _du(path: Path, *, apparent: bool = True) -> int:
    argv = ["du", "-s", "--block-size=1", *(["--apparent-size"] if apparent else []), str(path)]
    return int(subprocess.run(argv, capture_output=True, check=True).stdout.split()[0])


def _du_on(bench: Bench, host: str, datastore: Datastore) -> int:
    """``du --apparent-size`` of a datastore's BASE_PATH as ``host`` sees it."""
    argv = ["du", "-s", "--block-size=1", "--apparent-size", datastore.base_path]
    return int(bench.bed.host_run(bench.bed.host(host), argv).stdout.split()[0])
