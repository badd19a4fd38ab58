"""The fault matrix (docs/reliability.md): what breaks while OpenNebula works, and what a user then finds.

Each test breaks one thing on the bed for real (a Kubo daemon killed, a link cut, the driver killed, an
action run twice) at an exact moment of an OpenNebula operation, which only the simulator can be made to
wait for, and checks what every case must end with: one line a user understands, no partial ``disk.i``
nor temporary file on the host, no lost persistent change, and no pin on any node that nothing accounts
for. Faults in place before an operation starts run under genuine oned (tests/opennebula/test_outages.py).
"""

from __future__ import annotations

import http.server
import io
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from one_ipfs.images import ImageHandle
from testbed.bed import Bed
from testbed.kubo import Node
from testbed.one import Datastore, Image, OneFailure, OneSim, VirtualMachine
from tests.support.datastores import ipfs_datastore_template
from tests.support.images import disk_bytes, sha256
from tests.support.nodes import all_pins, bitswap_received, host_commands, pins
from tests.support.vms import SETTINGS, disk_path, image_from, leftovers, vm_disks, write_into

pytestmark = pytest.mark.bed

STALL = 20
WAIT = 120.0
"""How long a test waits for a fault's moment to come (never an assertion on how long anything took)."""


@pytest.fixture(scope="module")
def faults_ds(bed: Bed, one: OneSim) -> Datastore:
    """An IPFS datastore whose stall timeout is short, so that every fault is seen within seconds."""
    return one.datastore_create(ipfs_datastore_template(bed, "ipfs-faults", IPFS_STALL_TIMEOUT=str(STALL)))


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.05)


def in_background(call: Callable[[], object]) -> Future[object]:
    pool = ThreadPoolExecutor(1)
    future = pool.submit(call)
    pool.shutdown(wait=False)
    return future


def failure_of(future: Future[object]) -> OneFailure:
    error = future.exception(timeout=600)
    assert isinstance(error, OneFailure), f"expected the operation to fail, got {error!r}"
    return error


def one_line(info: str) -> str:
    assert info and "\n" not in info and "Traceback" not in info
    return info


# Frontend's node --------------------------------------------------------------------------------------


@pytest.fixture
def gated_web() -> Iterator[tuple[str, bytes, threading.Event, threading.Event]]:
    """An http server serving one image: it sends the first half, says so, and sends the rest only
    once the test lets it, so that a fault can be made to land in the middle of an import."""
    data = disk_bytes(4 << 20, seed=71)
    halfway, go_on = threading.Event(), threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()

        def do_GET(self) -> None:
            self.do_HEAD()
            try:
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                halfway.set()
                go_on.wait(WAIT)
                self.wfile.write(data[len(data) // 2 :])
            except OSError:
                pass

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/disk.img", data, halfway, go_on
    go_on.set()
    server.shutdown()


def test_the_frontend_node_killed_during_an_import_leaves_the_image_in_error_and_nothing_pinned(
    bed: Bed,
    one: OneSim,
    faults_ds: Datastore,
    gated_web: tuple[str, bytes, threading.Event, threading.Event],
) -> None:
    url, data, halfway, go_on = gated_web
    before = pins(bed.frontend)
    scratch = bed.frontend_var_lib_one / ".one-ipfs" / "tmp"
    scratch_before = set(scratch.iterdir()) if scratch.exists() else set()

    create = in_background(lambda: one.image_create(faults_ds, name="import-killed", path=url))
    wait_until(halfway.is_set, "the import to be half way")
    try:
        bed.kill_node(bed.frontend)
        go_on.set()
        failure = failure_of(create)
    finally:
        bed.start_node(bed.frontend)

    assert failure.action == "CP"
    assert "ipfs add: cannot reach the Kubo RPC API" in one_line(failure.info)
    assert "the IPFS daemon may be down" in failure.info
    assert failure.oid is not None
    image = one.image(failure.oid)
    assert image.state == "ERROR"
    assert "IPFS_CID" not in image.template
    assert pins(bed.frontend) == before
    assert (set(scratch.iterdir()) if scratch.exists() else set()) == scratch_before
    again = one.image_create(faults_ds, name="import-again", path=url)
    assert b"".join(bed.frontend.client().cat(f"/ipfs/{again.template['IPFS_CID']}")) == data


# A host's node ---------------------------------------------------------------------------------------


def test_a_host_node_killed_mid_deploy_resumes_on_retry_instead_of_starting_over(
    bed: Bed, one: OneSim, faults_ds: Datastore
) -> None:
    size = 16 << 20
    data = disk_bytes(size, seed=73)
    image = image_from(bed, one, faults_ds, data, "host-killed")
    host = bed.host("h1")
    before = all_pins(bed)
    start = bitswap_received(host.node)
    bed.set_rate(host, 32)
    try:
        deploy = in_background(lambda: one.vm_deploy([image], "h1"))
        wait_until(lambda: bitswap_received(host.node) - start > size // 3, "h1 to hold a third of the image")
        bed.kill_node(host.node)
        try:
            failure = failure_of(deploy)
        finally:
            bed.start_node(host.node)
    finally:
        bed.set_rate(host, None)
    assert failure.oid is not None
    vm = one.vm(failure.oid)
    assert failure.info.startswith("h1: ")
    assert "the IPFS daemon may be down" in one_line(failure.info)
    assert vm_disks(bed, "h1", vm) == []
    assert leftovers(bed, "h1") == []
    assert all_pins(bed) == before
    cid = one.image(image).template["IPFS_CID"]
    kept = host.node.client().files_stat(f"/ipfs/{cid}", with_local=True).size_local or 0
    assert kept > 0  # blocks that arrived before the crash stayed in the host's blockstore

    one.vm_recover_retry(vm)

    # The daemon's counters started again with it: this is what the retry received. Starting over would
    # be the whole image again; resuming leaves out blocks the crash left in the blockstore.
    on_retry = bitswap_received(host.node)
    assert on_retry <= size - (1 << 20)
    assert sha256(disk_path(bed, one, vm).read_bytes()) == sha256(data)
    one.vm_terminate(vm)
    assert leftovers(bed, "h1") == []


# The network and ssh ---------------------------------------------------------------------------------


def test_a_partition_between_frontend_and_host_mid_transfer_fails_in_bounded_time_and_a_retry_succeeds(
    bed: Bed, one: OneSim, faults_ds: Datastore
) -> None:
    size = 16 << 20
    data = disk_bytes(size, seed=75)
    image = image_from(bed, one, faults_ds, data, "partitioned")
    host = bed.host("h2")
    before = all_pins(bed)
    start = bitswap_received(host.node)
    bed.set_rate(host, 32)
    try:
        deploy = in_background(lambda: one.vm_deploy([image], "h2"))
        wait_until(lambda: bitswap_received(host.node) - start > size // 8, "h2 to be fetching the image")
        bed.partition(host)
        try:
            failure = failure_of(deploy)
            wait_until(lambda: not host_commands(host), "the host side to give up")
        finally:
            bed.heal(host)
    finally:
        bed.set_rate(host, None)

    assert failure.info.startswith("h2: ")
    assert "ssh connection to the host was lost" in one_line(failure.info)
    assert failure.oid is not None
    vm = one.vm(failure.oid)
    assert vm_disks(bed, "h2", vm) == []
    assert leftovers(bed, "h2") == []
    assert all_pins(bed) == before
    # Kubo's peering reconnects by itself, with a backoff (about 15 s here): the retry comes after it,
    # as with the default stall timeout (120 s) it would wait for it anyway.
    wait_until(lambda: bed.frontend.peer_id in peers_of(host.node), "h2's node to find its peers again")
    one.vm_recover_retry(vm)
    assert sha256(disk_path(bed, one, vm).read_bytes()) == sha256(data)
    one.vm_terminate(vm)


def peers_of(node: Node) -> set[str]:
    return {peer for peer, _ in node.client().swarm_peers()}


# The driver itself -----------------------------------------------------------------------------------


def children(pid: int) -> list[int]:
    """Every descendant of ``pid``."""
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if parent == pid:
            found += [int(entry.name), *children(int(entry.name))]
    return found


def command_of(pid: int) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return []


def driver_running(action: str) -> int | None:
    """The pid of a running transfer driver action (``python -m one_ipfs.driver tm <action>``)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            words = command_of(int(entry.name))
            if b"one_ipfs.driver" in words and words[words.index(b"one_ipfs.driver") + 2 :][:1] == [
                action.encode()
            ]:
                return int(entry.name)
    return None


def running_child(pid: int, word: bytes) -> bool:
    return any(word in command_of(child) for child in children(pid))


@dataclass(frozen=True)
class KilledSave:
    """A persistent image whose save-back was killed between pinning version 2 and recording it."""

    image: Image
    vm: VirtualMachine
    handle: ImageHandle
    first: str
    changed: bytes
    pins_before: set[tuple[str, str]]


def kill_mvds_at_its_worst_moment(bed: Bed, one: OneSim, ds: Datastore, name: str, seed: int) -> KilledSave:
    data = disk_bytes(8 << 20, seed=seed)
    image = image_from(bed, one, ds, data, name, persistent=True)
    first = one.image(image).template["IPFS_CID"]
    vm = one.vm_deploy([image], "h1")
    write_into(disk_path(bed, one, vm), 3 << 20, b"the change that must not be lost" * 64)
    changed = disk_path(bed, one, vm).read_bytes()
    before = pins(bed.frontend)

    terminate = in_background(lambda: one.vm_terminate(vm))
    driver: list[int] = []

    def saving_on_the_host() -> bool:
        pid = driver_running("mvds")
        driver[:] = [pid] if pid is not None else []
        return pid is not None and running_child(pid, b"ssh")

    wait_until(saving_on_the_host, "mvds to be saving the disk on h1")
    # The driver is killed at its worst moment: the new version is pinned on the datastore's node and
    # its record is on its way to oned, which never gets it.
    with one.api.holding("one.image.update") as door:
        wait_until(door.waiting.is_set, "mvds to record the new version")
        for pid in [*children(driver[0]), driver[0]]:
            os.kill(pid, signal.SIGKILL)
    failure = failure_of(terminate)

    assert failure.action == "TRANSFER"
    logged = [line.text for step in one.results("TRANSFER")[-1].steps for line in step.logs]
    assert any("Command execution failed" in text and "tm/ipfs/mvds" in text for text in logged)
    kept = one.image(image)
    assert kept.template["IPFS_CID"] == first
    assert kept.template["IPFS_VERSIONS"] == f"1:{first}"
    handle = ImageHandle.parse(kept.source)
    assert handle is not None
    assert (first, handle.hold_name(1)) in pins(bed.frontend)
    assert sha256(b"".join(bed.frontend.client().cat(f"/ipfs/{first}"))) == sha256(data)
    assert disk_path(bed, one, vm).read_bytes() == changed
    return KilledSave(image, vm, handle, first, changed, before)


def test_the_driver_killed_mid_mvds_keeps_the_previous_version_and_a_retry_saves_the_change(
    bed: Bed, one: OneSim, faults_ds: Datastore
) -> None:
    killed = kill_mvds_at_its_worst_moment(bed, one, faults_ds, "mvds-killed", seed=77)

    one.vm_recover_retry(killed.vm)

    saved = one.image(killed.image)
    versions = saved.template["IPFS_VERSIONS"].split()
    assert versions[0] == f"1:{killed.first}" and versions[1].startswith("2:") and len(versions) == 2
    second = saved.template["IPFS_CID"]
    assert pins(bed.frontend) - killed.pins_before == {(second, killed.handle.hold_name(2))}
    assert not disk_path(bed, one, killed.vm).exists()
    assert leftovers(bed, "h1") == []
    again = one.vm_deploy([killed.image], "h2")
    assert sha256(disk_path(bed, one, again).read_bytes()) == sha256(killed.changed)
    one.vm_terminate(again)


def test_a_save_killed_and_never_retried_leaves_no_pin_once_its_image_is_deleted(
    bed: Bed, one: OneSim, faults_ds: Datastore
) -> None:
    killed = kill_mvds_at_its_worst_moment(bed, one, faults_ds, "mvds-abandoned", seed=177)
    stray = pins(bed.frontend) - killed.pins_before
    assert len(stray) == 1 and next(iter(stray))[1] == killed.handle.hold_name(2)

    one.vm_recover_delete(killed.vm)
    one.image_delete(killed.image)

    assert pins(bed.frontend) == killed.pins_before - {(killed.first, killed.handle.hold_name(1))}
    assert leftovers(bed, "h1") == []


# oned retrying what already succeeded -----------------------------------------------------------------


def rerun_line(one: OneSim, vm: VirtualMachine, op: str, verb: str) -> str:
    """Send a line of a transfer file that already ran to the transfer driver again, as oned does on
    ``onevm recover --retry``; returns the failure's info, or '' when it succeeded."""
    line = next(line for line in one.transfer_file(vm, op).splitlines() if line.startswith(verb))
    result = one.transfer_manager.command(vm.id, line.split())
    return "" if result.success else result.info


@pytest.mark.parametrize("persistent", [False, True], ids=["clone", "ln"])
def test_a_deploy_line_run_again_keeps_the_disk_the_guest_wrote(
    bed: Bed, one: OneSim, faults_ds: Datastore, persistent: bool
) -> None:
    image = image_from(
        bed, one, faults_ds, disk_bytes(2 << 20, seed=78), f"again-{persistent}", persistent=persistent
    )
    vm = one.vm_deploy([image], "h3")
    write_into(disk_path(bed, one, vm), 0, b"written by the guest")
    written = disk_path(bed, one, vm).read_bytes()
    before = all_pins(bed)

    info = rerun_line(one, vm, "prolog", "LN" if persistent else "CLONE")

    assert info == ""
    assert disk_path(bed, one, vm).read_bytes() == written
    assert all_pins(bed) == before
    assert leftovers(bed, "h3") == []
    one.vm_terminate(vm)


def test_mvds_and_delete_run_again_after_the_epilog_lose_nothing(
    bed: Bed, one: OneSim, faults_ds: Datastore
) -> None:
    image = image_from(bed, one, faults_ds, disk_bytes(2 << 20, seed=79), "epilog-again", persistent=True)
    vm = one.vm_deploy([image], "h2")
    write_into(disk_path(bed, one, vm), 0, b"saved once")
    one.vm_terminate(vm)
    saved = one.image(image).template
    before = all_pins(bed)

    mvds = rerun_line(one, vm, "epilog", "MVDS")
    delete = rerun_line(one, vm, "epilog", "DELETE")

    assert mvds.startswith("h2: ") and "does not exist on this host" in one_line(mvds)
    assert delete == ""
    assert one.image(image).template["IPFS_VERSIONS"] == saved["IPFS_VERSIONS"]
    assert all_pins(bed) == before
    assert leftovers(bed, "h2") == []


def rerun_request(one: OneSim, action: str) -> tuple[tuple[bool, str], tuple[bool, str]]:
    """Send the last request of a datastore action to the driver again, byte for byte; returns what
    the first run and the second answered."""
    first = one.results(action)[-1]
    name, _, rest = first.request.partition("  ")
    oid, payload = rest.split(" ")
    again = one.datastore_manager.request(name, int(oid), payload)
    return (first.success, first.info), (again.success, again.info)


def test_cp_clone_and_rm_run_again_are_idempotent(bed: Bed, one: OneSim, faults_ds: Datastore) -> None:
    data = disk_bytes(1 << 20, seed=80)
    cid = bed.host("h3").node.client().add(io.BytesIO(data), settings=SETTINGS).cid
    image = one.image_create(faults_ds, name="cp-again", path=f"/ipfs/{cid}")
    clone = one.image_clone(image, "clone-again")
    before = pins(bed.frontend)

    for action in ("CP", "CLONE"):
        first, again = rerun_request(one, action)
        assert again == first == (True, again[1])
    assert pins(bed.frontend) == before
    assert one.image(image).template["IPFS_VERSIONS"] == f"1:{cid}"

    one.image_delete(clone)
    first, again = rerun_request(one, "RM")
    assert again == first == (True, again[1])
    one.image_delete(image)
    first, again = rerun_request(one, "RM")
    assert again == first == (True, again[1])
    assert cid not in {pin for pin, _ in pins(bed.frontend)}
    deployed = one.image_create(faults_ds, name="cp-after", path=f"/ipfs/{cid}")
    vm = one.vm_deploy([deployed], "h1")
    assert disk_path(bed, one, vm).read_bytes() == data
    one.vm_terminate(vm)
