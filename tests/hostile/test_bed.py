"""Hostile input through the real driver launchers, driver managers, ssh and Kubo of the test bed:
oned's one failure line, no pin added, no file written, and no command an argument smuggled in.

Each hostile value tries to create a marker file if anything ever runs it through a shell or hands it
to ssh as an option; the marker must not exist afterwards on the frontend or on any host.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from one_ipfs.ipfs.rpc import ImportSettings
from testbed.bed import Bed
from testbed.one import Datastore, OneFailure, OneSim

pytestmark = pytest.mark.bed

MARKER = "/tmp/one-ipfs-hostile-pwned"


def frontend_pins(bed: Bed) -> set[str]:
    return {pin.cid for pin in bed.frontend.client().pin_ls()}


def markers(bed: Bed) -> list[Path]:
    """The marker if a smuggled command created it: hosts share the frontend's /tmp on the bed."""
    return [place for place in (Path(MARKER),) if place.exists()]


@pytest.fixture
def clean(bed: Bed) -> Iterator[None]:
    assert markers(bed) == []
    yield
    assert markers(bed) == []


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        (f"-oProxyCommand=touch {MARKER}", "absolute frontend path"),
        (f"/ipfs/$(touch {MARKER})", "not a valid IPFS path"),
        (f"/var/tmp/x;touch {MARKER}", "does not exist"),
        (f"`touch {MARKER}`", "absolute frontend path"),
        (f"/var/tmp/x\ntouch {MARKER}", "absolute frontend path"),
        ("/var/tmp/../../etc/shadow", "restricted folder"),
    ],
)
def test_oneimage_create_with_a_hostile_path_fails_with_one_line_and_pins_nothing(
    bed: Bed, one: OneSim, ipfs_ds: Datastore, clean: None, path: str, reason: str
) -> None:
    pins = frontend_pins(bed)

    with pytest.raises(OneFailure) as failure:
        one.image_create(ipfs_ds, name="hostile", path=path)

    assert reason in failure.value.info
    assert "\n" not in failure.value.info
    assert frontend_pins(bed) == pins


def test_deploying_an_image_with_a_hostile_source_fails_before_anything_runs(
    bed: Bed, one: OneSim, ipfs_ds: Datastore, clean: None
) -> None:
    image = one.image_create(
        ipfs_ds, name="hostile-source", source=f"/ipfs/$(touch${{IFS}}{MARKER})", size_mb=1
    )
    pins = frontend_pins(bed)

    with pytest.raises(OneFailure) as failure:
        one.vm_deploy([image], "h1")

    assert failure.value.action == "TRANSFER"
    assert "not a valid IPFS path" in failure.value.info
    assert "\n" not in failure.value.info
    assert frontend_pins(bed) == pins
    assert not list((bed.host("h1").var_lib_one / "datastores" / "0").rglob("disk.*"))


@pytest.mark.parametrize(
    ("disk", "reason"),
    [
        (f"-oProxyCommand=touch {MARKER}:/var/lib/one//datastores/0/4242/disk.0", "not a host name"),
        ("h1:/var/lib/one//datastores/0/4242/../../../../../etc/cron.d/x", "may not contain '..'"),
        (f"h1:/var/lib/one//datastores/0/4242/disk.0;touch${{IFS}}{MARKER}", "may not contain ';'"),
        ("h1:/var/lib/one//datastores/0/4242/disk.0/../../../../../../root/.ssh/authorized_keys", "'..'"),
    ],
)
def test_a_clone_to_a_hostile_disk_location_fails_with_one_line_and_writes_nothing(
    bed: Bed, one: OneSim, ipfs_ds: Datastore, clean: None, disk: str, reason: str
) -> None:
    """A transfer-file CLONE line as oned writes it, with the disk argument replaced."""
    data = b"hostile deploy" * 1000
    cid = bed.frontend.client().add(io.BytesIO(data), settings=ImportSettings()).cid
    image = one.image_create(ipfs_ds, name="hostile-target", path=f"/ipfs/{cid}")
    pins = {name: {pin.cid for pin in bed.host(name).node.client().pin_ls()} for name in ("h1", "h2", "h3")}

    result = one.transfer_manager.command(
        4242, ["CLONE", "ipfs", f"{one.hostname}:{one.image(image).source}", disk, "4242", str(ipfs_ds.id)]
    )

    assert not result.success
    assert reason in result.info and "\n" not in result.info
    assert {name: {pin.cid for pin in bed.host(name).node.client().pin_ls()} for name in pins} == pins
    assert not (bed.host("h1").var_lib_one / "datastores" / "0" / "4242").exists()
