"""``make demo``: the life of a disk image in an OpenNebula cloud whose datastore is IPFS.

A test bed (a frontend and three hypervisor hosts, each with its own Kubo node on a private swarm) and
genuine OpenNebula (oned 7.4.0 built from ``../shared/vendor``, driven by its own CLI) run the real
drivers; where no OpenNebula can be found or built, the simulator runs them as oned would, and the demo
says so. The story: an admin creates an
IPFS datastore and imports a 256 MiB image; three VMs boot from it at once; a persistent copy carries a
guest's change from one host to another; a VM live-migrates; a disk is saved as a new image. Every step
checks the bytes by sha256, because a fast transfer of the wrong bytes is worth nothing.

``ONE_IPFS_DEMO_BED=prefix:address/length:api:gateway`` runs it on a small bed of its own (see
``Layout.parse``), so that it can share the machine with the default bed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from one_ipfs.errors import OneIpfsError
from testbed import package
from testbed.bed import Bed, Layout
from testbed.genuine import VERSIONS, Cloud, Frontend, GenuineOne, Installation, Unavailable, installation
from testbed.one import Image, OneSim, VirtualMachine
from testbed.one.bedrunner import BedRunner

BED_ENV = "ONE_IPFS_DEMO_BED"
IMAGE_SIZE = 256 << 20
RUN = 64 << 10
"""Length of each run of random data and of zeros in the generated image."""
LABEL_WIDTH = 46
SUMMARY = """\
  one image imported, then deployed on 3 hosts at once; a persistent disk changed on h1, saved as
  version 2 and deployed on h2; a live migration; a disk saved as a new image: every byte as expected"""


@dataclass
class Line:
    """What a step prints after its time: a note (a CID, an id, the verdict of its check)."""

    note: str = ""
    ended: float | None = None

    def stop(self) -> None:
        """End the timed part here: the check that follows is not the operation's time."""
        self.ended = time.monotonic()


@dataclass
class Story:
    """Prints each step as one timed line and keeps the verdicts, so that every mismatch is reported."""

    started: float = field(default_factory=time.monotonic)
    checks: int = 0
    failures: list[str] = field(default_factory=list)

    @contextlib.contextmanager
    def step(self, label: str) -> Iterator[Line]:
        """The label first, so a slow step shows what it is doing; its time and note when it ends."""
        print(f"  {label} ".ljust(LABEL_WIDTH, "."), end=" ", flush=True)
        line = Line()
        start = time.monotonic()
        try:
            yield line
        except BaseException as exc:
            print("interrupted" if isinstance(exc, KeyboardInterrupt) else "failed", flush=True)
            raise
        seconds = (line.ended or time.monotonic()) - start
        note = f"  ({line.note})" if line.note else ""
        print(f"{seconds:5.1f} s{note}", flush=True)

    def check(self, ok: bool, failure: str) -> str:
        """Record one verification; its word for the step's note."""
        self.checks += 1
        if not ok:
            self.failures.append(failure)
        return "ok" if ok else "MISMATCH"


def layout_from_env() -> Layout:
    spec = os.environ.get(BED_ENV)
    return Layout.parse(spec) if spec else Layout()


def write_disk_image(path: Path) -> str:
    """Write a disk-like image a run at a time (never all of it in memory); its sha256.

    Random runs are what no chunk deduplicates; zero runs are what a real disk is mostly made of and what
    a deploy must keep sparse on the host.
    """
    digest = hashlib.sha256()
    zeros = bytes(RUN)
    with path.open("wb") as out:
        for _ in range(IMAGE_SIZE // (2 * RUN)):
            for piece in (os.urandom(RUN), zeros):
                out.write(piece)
                digest.update(piece)
    path.chmod(0o644)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def pieces_sha256(pieces: Iterable[bytes]) -> str:
    digest = hashlib.sha256()
    for piece in pieces:
        digest.update(piece)
    return digest.hexdigest()


def disk_path(bed: Bed, one: Cloud, vm: VirtualMachine) -> Path:
    """Disk 0 of ``vm`` in its host's system datastore, as the root namespace reaches it."""
    where = one.vm(vm).hostname
    return bed.host(where).var_lib_one / "datastores" / "0" / str(vm.id) / "disk.0"


def guest_writes(path: Path, text: str) -> None:
    """What a guest does to its disk: new bytes in the middle of a zero run."""
    with path.open("r+b") as disk:
        disk.seek(IMAGE_SIZE // 2 + RUN)
        disk.write(text.encode())


def image_sha256(bed: Bed, one: Cloud, image: Image) -> str:
    """The content a deploy of ``image`` gets: its recorded CID, read from the frontend's node."""
    cid = one.image(image).template["IPFS_CID"]
    return pieces_sha256(bed.frontend.client(timeout=300).cat(f"/ipfs/{cid}"))


def short(value: str) -> str:
    return f"{value[:12]}…{value[-6:]}"


def genuine_opennebula() -> Installation | None:
    """The OpenNebula the demo runs (the current version), found or built once; None, said in one line,
    where there is neither an install nor a source."""
    try:
        return installation(VERSIONS[0])
    except Unavailable as missing:
        print(f"  genuine OpenNebula {VERSIONS[0]} not available ({missing}): the simulator runs the drivers")
        return None


def start_cloud(story: Story, bed: Bed, found: Installation | None) -> Cloud:
    """oned with the drivers installed and the hosts added and synced, or the simulator in its place."""
    if found is None:
        simulator = OneSim(BedRunner(bed), state=bed.root / "one")
        with story.step("[simulator] install the drivers, onehost sync"):
            simulator.install_drivers()
            simulator.onehost_sync()
        return simulator
    with story.step("pip install the wheel into a clean venv") as line:
        python = package.installed()
        line.note = f"{python.parent.parent}, built from this checkout"
    frontend = Frontend(bed, found, str(python))
    names = ", ".join(host.name for host in bed.hosts)
    with story.step(f"oned {found.version}, one-ipfs install") as line:
        frontend.start()
        line.note = f"onehost create {names}, onehost sync --force"
    return GenuineOne(frontend)


def tell(story: Story, bed: Bed, one: Cloud, image_file: Path) -> None:
    """The story proper, on a running bed."""
    with story.step("onedatastore create (DS_MAD/TM_MAD ipfs)") as line:
        template = {"NAME": "ipfs", "DS_MAD": "ipfs", "TM_MAD": "ipfs", "IPFS_API": bed.frontend.api}
        ds = one.datastore_create(template)
        line.note = f"datastore {ds.id}, IPFS_API {bed.frontend.api}"

    with story.step(f"write a {IMAGE_SIZE >> 20} MiB disk image") as line:
        original = write_disk_image(image_file)
        line.note = f"{image_file}, sha256 {short(original)}"

    with story.step("oneimage create --path <that file>") as line:
        image = one.image_create(ds, name="demo", path=str(image_file))
        line.stop()
        verdict = story.check(image_sha256(bed, one, image) == original, "the imported image differs")
        line.note = f"image {image.id}, CID {short(image.template['IPFS_CID'])}, content {verdict}"

    hosts = [host.name for host in bed.hosts]
    with story.step(f"deploy a VM on {', '.join(hosts)} at once") as line:
        # Safe: oned serialises its own work, and the simulator edits each state file under one flock.
        with ThreadPoolExecutor(len(hosts)) as pool:
            vms = list(pool.map(lambda host: one.vm_deploy([image], host), hosts))
            line.stop()
            hashes = list(pool.map(lambda vm: file_sha256(disk_path(bed, one, vm)), vms))
        verdicts = [
            story.check(h == original, f"VM {vm.id}'s disk on {host} differs from the image")
            for host, vm, h in zip(hosts, vms, hashes, strict=True)
        ]
        each = zip(hosts, vms, verdicts, strict=True)
        line.note = "sha256 " + ", ".join(f"{host}: VM {vm.id} {verdict}" for host, vm, verdict in each)

    with story.step("oneimage clone, oneimage persistent") as line:
        copy = one.image_persistent(one.image_clone(image, "demo-persistent"), True)
        line.note = f"image {copy.id}, CID {short(copy.template['IPFS_CID'])}"

    with story.step("deploy the persistent image on h1") as line:
        vm = one.vm_deploy([copy], "h1")
        line.note = f"VM {vm.id}"
    guest_writes(disk_path(bed, one, vm), f"written by the guest of VM {vm.id} on h1")
    changed = file_sha256(disk_path(bed, one, vm))

    with story.step(f"guest wrote, onevm terminate VM {vm.id}") as line:
        one.vm_terminate(vm)
        versions = one.image(copy).template["IPFS_VERSIONS"].split()
        story.check(len(versions) == 2, f"terminate saved no version 2: IPFS_VERSIONS {versions}")
        line.note = f"saved back: IPFS_VERSIONS {' '.join(short(v) for v in versions)}"

    with story.step("deploy the persistent image on h2") as line:
        vm = one.vm_deploy([copy], "h2")
        line.stop()
        verdict = story.check(
            file_sha256(disk_path(bed, one, vm)) == changed, "the disk on h2 is not what the guest left on h1"
        )
        line.note = f"VM {vm.id}, the guest's change from h1 is there: {verdict}"

    moving = vms[hosts.index("h2")]
    guest_writes(disk_path(bed, one, moving), f"written by the guest of VM {moving.id} on h2")
    before = file_sha256(disk_path(bed, one, moving))
    with story.step(f"onevm migrate --live VM {moving.id} h2 -> h3") as line:
        one.vm_migrate(moving, "h3", live=True)
        line.stop()
        moved = one.vm(moving)
        after = file_sha256(disk_path(bed, one, moved))
        verdict = story.check(moved.hostname == "h3" and after == before, "the live-migrated disk changed")
        line.note = f"now on {moved.hostname}, disk byte-identical: {verdict}"

    with story.step(f"onevm disk-saveas VM {moving.id} disk 0") as line:
        saved = one.disk_saveas(moving, 0, "demo-saved")
        line.stop()
        verdict = story.check(image_sha256(bed, one, saved) == after, "the saved image differs from the disk")
        line.note = f"image {saved.id}, CID {short(saved.template['IPFS_CID'])}, content {verdict}"


@contextlib.contextmanager
def running_bed(story: Story, layout: Layout | None, root: Path | None) -> Iterator[Bed]:
    """A frontend and 3 hosts, torn down whatever happens (``Bed`` turns SIGTERM into an exit too)."""
    layout = layout or layout_from_env()
    with story.step("bring up the bed") as line:
        bed = Bed.up(hosts=3, root=root or layout.root, layout=layout)
        addresses = [f"frontend {layout.frontend_address}", *(f"{h.name} {h.address}" for h in bed.hosts)]
        line.note = ", ".join(addresses)
    try:
        yield bed
    finally:
        with story.step("tear the bed down"):
            bed.down()


@contextlib.contextmanager
def scratch_file() -> Iterator[Path]:
    """A file in /var/tmp, the datastore's default SAFE_DIRS, that oneadmin can read; removed after."""
    handle, name = tempfile.mkstemp(prefix="one-ipfs-demo-", suffix=".img", dir="/var/tmp")
    os.close(handle)
    try:
        yield Path(name)
    finally:
        Path(name).unlink(missing_ok=True)


def main(layout: Layout | None = None, root: Path | None = None) -> int:
    """Tell the story on a bed of ``layout`` (by default ONE_IPFS_DEMO_BED's, or the default one) at
    ``root`` (by default the layout's), under genuine oned where there is one; 0 only if every check
    passed."""
    story = Story()
    try:
        found = genuine_opennebula()
        runner = f"genuine OpenNebula {found.version}" if found else "the OpenNebula simulator"
        print(f"one-ipfs demo: VM disks from IPFS, under {runner}, on a frontend and 3 hosts")
        with running_bed(story, layout, root) as bed, scratch_file() as image_file:
            one = start_cloud(story, bed, found)
            try:
                tell(story, bed, one, image_file)
            finally:
                if isinstance(one, GenuineOne):
                    one.frontend.stop()
    except OneIpfsError as exc:
        print(f"demo FAILED: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("demo interrupted; the bed is down", file=sys.stderr)
        return 130
    seconds = time.monotonic() - story.started
    if story.failures:
        print(f"demo FAILED: {len(story.failures)} of {story.checks} checks:", file=sys.stderr)
        for failure in story.failures:
            print(f"  {failure}", file=sys.stderr)
        return 1
    print(f"all {story.checks} sha256 checks passed in {seconds:.0f} s:\n{SUMMARY}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
