"""How hosts fetching one image at once share it out (``one_ipfs.ipfs.fleet.FetchOrder``), without Kubo."""

from __future__ import annotations

import threading
import zlib

import pytest

from one_ipfs.ipfs import fleet
from one_ipfs.ipfs.fleet import FetchOrder, Want

LEAVES = [f"bafkleaf{i:03}" for i in range(64)]


def bits(*leaves: str) -> int:
    """A report of holding ``leaves``."""
    return sum(1 << LEAVES.index(leaf) for leaf in set(leaves))


def taken_now(order: FetchOrder, count: int) -> list[str]:
    leaves = []
    for _ in range(count):
        want = order.take()
        assert want is not None
        leaves.append(want.leaf)
    return leaves


def take_in_background(order: FetchOrder) -> tuple[threading.Thread, list[Want | None]]:
    got: list[Want | None] = []
    worker = threading.Thread(target=lambda: got.append(order.take()), daemon=True)
    worker.start()
    return worker, got


def fetch_everything_of_my_own(order: FetchOrder) -> list[str]:
    """Take and finish leaves until only other owners' are left, then stop the order: its own, in order."""
    own: list[str] = []
    while True:
        worker, got = take_in_background(order)
        worker.join(0.3)
        if worker.is_alive():  # only other owners' leaves are left
            order.stop()
            worker.join()
            return own
        want = got[0]
        assert want is not None
        assert want.holder is None, "a host's own leaf was to be read from another host"
        own.append(want.leaf)
        order.done(want.leaf)


def finish(order: FetchOrder, count: int) -> list[str]:
    """Take and finish ``count`` leaves, one at a time."""
    finished = []
    for _ in range(count):
        (leaf,) = taken_now(order, 1)
        order.done(leaf)
        finished.append(leaf)
    return finished


def test_a_host_alone_takes_every_leaf_once_as_many_at_once_as_it_has_workers() -> None:
    order = FetchOrder(LEAVES, "host-a", alone_at_once=8)
    first = taken_now(order, 8)
    worker, got = take_in_background(order)
    worker.join(0.3)
    assert worker.is_alive(), "a ninth leaf was handed out before any of the eight came"

    order.done(first[0])
    worker.join(5)
    (ninth,) = got
    assert ninth is not None
    rest = []
    for earlier in [*first[1:], ninth.leaf]:
        order.done(earlier)
    while (want := order.take()) is not None:
        rest.append(want.leaf)
        order.done(want.leaf)

    assert sorted([*first, ninth.leaf, *rest]) == sorted(LEAVES)


def test_hosts_alone_start_at_different_leaves() -> None:
    firsts = {FetchOrder(LEAVES, f"host-{name}", alone_at_once=8).take() for name in "abcdefgh"}
    assert len(firsts) > 1


def test_two_hosts_that_heard_of_each_other_own_each_leaf_exactly_once() -> None:
    a, b = FetchOrder(LEAVES, "host-a", alone_at_once=8), FetchOrder(LEAVES, "host-b", alone_at_once=8)
    a.heard("host-b", 0)
    b.heard("host-a", 0)

    own_a, own_b = fetch_everything_of_my_own(a), fetch_everything_of_my_own(b)

    assert a.members == b.members == ["host-a", "host-b"]
    assert not set(own_a) & set(own_b)
    assert sorted(own_a + own_b) == sorted(LEAVES)


def host_a_left_with_host_bs_leaves() -> tuple[FetchOrder, list[str]]:
    """Host a of a fleet with host b, holding all its own leaves: its order, and b's leaves in b's order."""
    b = FetchOrder(LEAVES, "host-b", alone_at_once=8)
    b.heard("host-a", 0)
    own_b = fetch_everything_of_my_own(b)
    a = FetchOrder(LEAVES, "host-a", alone_at_once=8)
    a.heard("host-b", 0)
    own_a = finish(a, len(LEAVES) - len(own_b))
    assert not set(own_a) & set(own_b)
    return a, own_b


def test_another_owners_leaves_wait_until_it_reports_holding_them_then_are_read_from_it() -> None:
    a, own_b = host_a_left_with_host_bs_leaves()

    worker, got = take_in_background(a)
    worker.join(0.3)
    assert worker.is_alive(), "host-a asked for host-b's leaf before host-b held it"

    a.heard("host-b", bits(own_b[0]))
    worker.join(5)
    assert got == [Want(own_b[0], "host-b")]


def test_an_owner_that_went_silent_no_longer_holds_its_leaves_back(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fleet, "OWNER_SILENT", 0.2)
    monkeypatch.setattr(fleet, "RECHECK", 0.05)
    order = FetchOrder(LEAVES, "host-a", alone_at_once=8)
    order.heard("host-b", 0)
    taken = []
    while (want := order.take()) is not None:  # ends only once host-b's leaves were handed out too
        assert want.holder is None, "a leaf was to be read from a host that never held it"
        taken.append(want.leaf)
        order.done(want.leaf)
    assert sorted(taken) == sorted(LEAVES)


def test_an_owner_that_reports_no_progress_no_longer_holds_its_leaves_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(fleet, "OWNER_STUCK", 0.3)
    monkeypatch.setattr(fleet, "RECHECK", 0.05)
    order = FetchOrder(LEAVES, "host-a", alone_at_once=8)
    order.heard("host-b", 0)
    reporting = threading.Event()

    def stuck_at_zero() -> None:  # host-b keeps saying it holds nothing
        while not reporting.wait(0.05):
            order.heard("host-b", 0)

    threading.Thread(target=stuck_at_zero, daemon=True).start()
    try:
        taken = []
        while (want := order.take()) is not None:
            taken.append(want.leaf)
            order.done(want.leaf)
    finally:
        reporting.set()
    assert sorted(taken) == sorted(LEAVES)


def test_a_host_reports_exactly_the_leaves_it_holds() -> None:
    order = FetchOrder(LEAVES, "host-a", alone_at_once=8)
    first, second = taken_now(order, 2)
    assert order.held() == 0
    order.done(second)
    assert order.held() == bits(second)
    order.done(first)
    assert order.held() == bits(first, second)
    while (want := order.take()) is not None:
        order.done(want.leaf)
    assert order.held() == bits(*LEAVES)


def test_stopping_releases_a_worker_waiting_for_an_owner() -> None:
    a, _ = host_a_left_with_host_bs_leaves()
    worker, got = take_in_background(a)

    a.stop()

    worker.join(5)
    assert got == [None]


def test_an_owner_that_went_silent_holding_its_leaves_is_still_read_from(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(fleet, "OWNER_SILENT", 0.1)
    a, own_b = host_a_left_with_host_bs_leaves()
    a.heard("host-b", bits(*LEAVES))  # host-b's last report: it holds everything, and it is done

    threading.Event().wait(0.2)

    assert sorted(taken_wants(a), key=lambda want: want.leaf) == [
        Want(leaf, "host-b") for leaf in sorted(own_b)
    ]


def taken_wants(order: FetchOrder) -> list[Want]:
    wants = []
    while (want := order.take()) is not None:
        wants.append(want)
        order.done(want.leaf)
    return wants


def fleet_of_three_with_its_own_leaves_in_flight() -> tuple[FetchOrder, list[str]]:
    """Host a of a fleet with hosts b and c, asking for as many of its own leaves as it may at once:
    its order, and leaves that are not among those."""
    order = FetchOrder(LEAVES, "host-a", alone_at_once=8)
    order.heard("host-b", 0)
    order.heard("host-c", 0)
    own = taken_now(order, fleet.OWN_AT_ONCE)
    return order, [leaf for leaf in LEAVES if leaf not in own]


def test_a_leaf_several_hosts_hold_is_read_from_the_one_this_host_reads_least_from() -> None:
    order, others = fleet_of_three_with_its_own_leaves_in_flight()
    order.heard("host-b", bits(*others[:2]))
    order.heard("host-c", bits(*others[:2]))  # host-c read them from host-b already

    first, second = order.take(), order.take()

    assert first is not None and second is not None
    assert {first.leaf, second.leaf} == set(others[:2])
    assert {first.holder, second.holder} == {"host-b", "host-c"}


def test_a_holder_that_failed_is_not_read_from_again_and_what_only_it_holds_comes_by_bitswap() -> None:
    order, others = fleet_of_three_with_its_own_leaves_in_flight()
    order.heard("host-b", bits(*others[:2]))
    order.heard("host-c", bits(others[0]))
    order.failed("host-c")

    assert order.take() == Want(others[0], "host-b")
    order.failed("host-b")
    assert order.take() == Want(others[1], None)


@pytest.mark.parametrize(
    "report",
    [
        b"12",  # a report of another protocol version: a count, not leaves
        zlib.compress(bytes(16)),  # one for an image of 128 leaves
        zlib.compress(bytes(8))[:-2],  # cut short
        zlib.compress(bytes(8) + b"more"),
        zlib.compress(bytes(1 << 20)),  # a bomb for this image: 1 MiB of zeros in 1 KiB
    ],
)
def test_a_report_for_other_leaves_than_the_images_is_ignored(report: bytes) -> None:
    assert fleet._decode_held(report, len(LEAVES)) is None


def test_a_report_carries_exactly_the_leaves_held() -> None:
    held = bits(*LEAVES[::3], LEAVES[1])
    assert fleet._decode_held(fleet._encode_held(held, len(LEAVES)), len(LEAVES)) == held
