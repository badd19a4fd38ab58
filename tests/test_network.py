"""A Kubo repository configured by network.py is a private-network member that reaches nothing public.

These run the real Kubo binary on repositories in a temporary folder (no daemon stays up, no root needed).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from one_ipfs.errors import CommandFailed, InvalidInput, StorageError
from one_ipfs.ipfs import network
from testbed.kubo import KUBO

PEER = network.Peer("12D3KooWB3RqapHnE7vrxBWmHbrfynv5H6xkCTDvj6ms5PEmkVWW", ("/ip4/198.18.0.11/tcp/4001",))
SETTINGS = network.NodeSettings(
    swarm_addresses=("/ip4/198.18.0.1/tcp/4001",),
    api_address="/ip4/127.0.0.1/tcp/5001",
    gateway_address="/ip4/127.0.0.1/tcp/8080",
    peers=(PEER,),
    storage_max="80GB",
)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    if not KUBO.exists():
        pytest.skip(f"no Kubo binary at {KUBO}; run `make kubo`")
    return tmp_path / "ipfs"


def ipfs(repo: Path, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **network.daemon_environment(repo)}
    return subprocess.run(
        [str(KUBO), *args], env=env, capture_output=True, text=True, check=check, timeout=timeout
    )


def config(repo: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((repo / "config").read_text())
    return loaded


def strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def lookup(tree: dict[str, Any], dotted: str) -> Any:
    for key in dotted.split("."):
        tree = tree[key]
    return tree


def test_swarm_key_is_in_the_standard_format_and_new_each_time() -> None:
    key = network.generate_swarm_key()

    assert re.fullmatch(rb"/key/swarm/psk/1\.0\.0/\n/base16/\n[0-9a-f]{64}\n", key)
    assert network.generate_swarm_key() != key


def test_init_repository_returns_the_peer_id_kubo_reports(repo: Path) -> None:
    peer_id = network.init_repository(KUBO, repo)

    assert peer_id == network.read_peer_id(repo)
    assert ipfs(repo, "id", "--offline", "-f", "<id>").stdout.strip() == peer_id


def test_init_repository_starts_with_no_public_endpoint_and_the_drivers_import_profile(repo: Path) -> None:
    network.init_repository(KUBO, repo)

    written = config(repo)
    assert "auto" not in set(strings(written))
    assert written["AutoConf"]["Enabled"] is False
    assert written["Import"]["UnixFSChunker"] == "size-1048576"
    assert written["Import"]["CidVersion"] == 1


def test_init_repository_refuses_an_existing_repository(repo: Path) -> None:
    network.init_repository(KUBO, repo)

    with pytest.raises(CommandFailed, match=r"ipfs init of .* failed"):
        network.init_repository(KUBO, repo)


def test_configured_node_holds_the_private_settings_and_kubo_knows_every_key(repo: Path) -> None:
    peer_id = network.init_repository(KUBO, repo)
    key = network.generate_swarm_key()

    network.configure_private_node(repo, key, SETTINGS)

    written = config(repo)
    wanted = network.private_network_config(SETTINGS)
    for dotted, value in wanted.items():
        assert lookup(written, dotted) == value, dotted
        # `ipfs config` refuses a key its config structure does not have ("... not found").
        ipfs(repo, "config", "--json", dotted, json.dumps(value))
    assert written["Bootstrap"] == []
    assert written["Addresses"]["Swarm"] == written["Addresses"]["Announce"] == ["/ip4/198.18.0.1/tcp/4001"]
    assert written["Peering"]["Peers"] == [{"ID": PEER.peer_id, "Addrs": list(PEER.addresses)}]
    assert written["Datastore"]["StorageMax"] == "80GB"
    assert "auto" not in set(strings(written))
    assert network.read_peer_id(repo) == peer_id
    assert (repo / "swarm.key").read_bytes() == key


def test_swarm_key_and_config_are_readable_by_their_owner_only(repo: Path) -> None:
    network.init_repository(KUBO, repo)

    network.configure_private_node(repo, network.generate_swarm_key(), SETTINGS)

    assert (repo / "swarm.key").stat().st_mode & 0o777 == 0o600
    assert (repo / "config").stat().st_mode & 0o777 == 0o600


def test_configure_rejects_a_malformed_swarm_key(repo: Path) -> None:
    network.init_repository(KUBO, repo)

    with pytest.raises(InvalidInput, match="swarm key"):
        network.configure_private_node(repo, b"/key/swarm/psk/1.0.0/\n/base16/\nabc\n", SETTINGS)
    assert not (repo / "swarm.key").exists()


def test_configure_needs_a_repository(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="not a Kubo repository"):
        network.configure_private_node(tmp_path, network.generate_swarm_key(), SETTINGS)


def test_daemon_environment_makes_kubo_refuse_to_start_without_the_swarm_key(repo: Path) -> None:
    network.init_repository(KUBO, repo)
    loopback = network.NodeSettings(
        swarm_addresses=("/ip4/127.0.0.1/tcp/0",),
        api_address="/ip4/127.0.0.1/tcp/0",
        gateway_address="/ip4/127.0.0.1/tcp/0",
    )
    network.configure_private_node(repo, network.generate_swarm_key(), loopback)
    (repo / "swarm.key").unlink()

    result = ipfs(repo, "daemon", check=False)

    assert result.returncode != 0
    assert "private network was not configured but is enforced" in result.stderr
