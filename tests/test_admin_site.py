"""``one-ipfs`` on a self-contained OpenNebula: every command follows ``$ONE_LOCATION`` (or
``--one-location``) as OpenNebula's own tools do, for the remotes tree, oned.conf and the state folder.
oned is a fake on loopback and ssh a stand-in on PATH; nothing leaves this machine.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from one_ipfs.admin.cli import main
from one_ipfs.config import remotes_dir, state_dir
from tests.support.oned import fake_oned
from tests.test_admin_install import self_contained_one
from tests.test_opennebula_input import CID, datastore_xml, image_xml

SSH_REFUSED = "ssh: connect to host h1 port 22: Connection refused"


def stand_ins(folder: Path) -> Path:
    """An ssh that reaches no host (and notes its arguments in ``ssh.log``)."""
    folder.mkdir()
    (folder / "ssh").write_text(
        f"#!/bin/sh\necho \"$*\" >>'{folder}/ssh.log'\necho '{SSH_REFUSED}' >&2\nexit 255\n"
    )
    (folder / "ssh").chmod(0o755)
    return folder


@pytest.fixture
def site_oned(tmp_path: Path) -> Iterator[dict[str, str]]:
    """oned answering one IPFS image in one IPFS datastore; its endpoint and session as environment."""
    image = image_xml(SOURCE="one-ipfs/ds100/img7").replace(
        "<TEMPLATE>",
        f"<TEMPLATE><IPFS_CID><![CDATA[{CID}]]></IPFS_CID><IPFS_VERSIONS>1:{CID}</IPFS_VERSIONS>",
    )
    pools = {
        "one.imagepool.info": lambda *pool_filter: f"<IMAGE_POOL>{image}</IMAGE_POOL>",
        "one.datastorepool.info": lambda: f"<DATASTORE_POOL>{datastore_xml()}</DATASTORE_POOL>",
    }
    with fake_oned(tmp_path, pools) as env:
        yield env


def one_ipfs(*args: str, env: dict[str, str | None]) -> Result:
    """In this process; ONE_LOCATION is put back afterwards, whatever the command exported."""
    return CliRunner().invoke(main, list(args), env={"ONE_LOCATION": None, **env}, catch_exceptions=False)


@pytest.fixture
def one(tmp_path: Path) -> Path:
    return self_contained_one(tmp_path / "one")


def test_install_without_options_goes_into_one_location(one: Path) -> None:
    result = one_ipfs("install", env={"ONE_LOCATION": str(one)})

    assert result.exit_code == 0, result.output
    assert (one / "var" / "remotes" / "tm" / "ipfs" / "clone").exists()
    assert "BEGIN one-ipfs" in (one / "etc" / "oned.conf").read_text()


def test_prefetch_finds_the_drivers_and_keeps_its_state_under_one_location(
    one: Path, tmp_path: Path, site_oned: dict[str, str]
) -> None:
    bin_dir = stand_ins(tmp_path / "bin")
    assert one_ipfs("install", env={"ONE_LOCATION": str(one)}).exit_code == 0
    env: dict[str, str | None] = {
        "ONE_LOCATION": str(one),
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        **site_oned,
    }

    result = one_ipfs("prefetch", "7", "--hosts", "h1", env=env)

    assert result.exit_code == 1
    assert "not installed" not in result.output
    assert f"h1: {SSH_REFUSED}" in result.output
    assert (one / "var" / ".one-ipfs" / "ssh").is_dir()


def test_one_location_option_stands_for_the_environment_variable(one: Path) -> None:
    result = one_ipfs("uninstall", "--one-location", str(one), "--print", env={})

    assert result.exit_code == 0, result.output
    assert f"oned.conf {one / 'etc' / 'oned.conf'}: nothing to change" in result.output


def test_driver_state_and_remotes_follow_one_location(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ONE_IPFS_STATE", raising=False)
    monkeypatch.delenv("ONE_IPFS_REMOTES", raising=False)
    monkeypatch.setenv("ONE_LOCATION", "/opt/one")

    assert state_dir() == Path("/opt/one/var/.one-ipfs")
    assert remotes_dir() == Path("/opt/one/var/remotes")
    monkeypatch.delenv("ONE_LOCATION")
    assert state_dir() == Path("/var/lib/one/.one-ipfs")
    assert remotes_dir() == Path("/var/lib/one/remotes")
