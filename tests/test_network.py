"""A Kubo repository configured by network.py is a private-network member that reaches nothing public, and
``one-ipfs network init|join`` makes the frontend and the hosts one network, keeping the earlier members.

These run the real Kubo binary on repositories in a temporary folder (no daemon stays up, no root needed).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from one_ipfs.admin import network as private_network
from one_ipfs.admin.nodes import Reply
from one_ipfs.errors import CommandFailed, InvalidInput, StorageError
from one_ipfs.host import protocol as p
from one_ipfs.host.__main__ import handle
from one_ipfs.host.probe import API_FILE
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


# ------------------------------------------------------------------------- one-ipfs network init|join

ADDRESSES = {"frontend": "10.0.0.1", "h1": "10.0.0.11", "h2": "10.0.0.12"}


@pytest.fixture
def cloud(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """The frontend's Kubo repository and h1's and h2's, each at its storage-network address as an admin
    finds them; every host command runs in this process on the node's own repository, its request and its
    result read back from their JSON as the channel does."""
    if not KUBO.exists():
        pytest.skip(f"no Kubo binary at {KUBO}; run `make kubo`")
    repos = {name: a_node(tmp_path / name, address) for name, address in ADDRESSES.items()}

    def call_all(
        nodes: list[str], request: Callable[[str], p.Request[Any]], progress: object = None
    ) -> dict[str, Reply[Any]]:
        sent = {name: replace(request(name), repo=str(repos[name])) for name in nodes}  # type: ignore[call-arg]
        return {
            name: Reply(
                name, p.read_result(sent[name], p.to_json(handle(p.read_request(p.to_json(sent[name])))))
            )
            for name in nodes
        }

    monkeypatch.setattr(private_network, "call_all", call_all)
    return repos


def a_node(repo: Path, address: str) -> Path:
    network.init_repository(KUBO, repo)
    settings = config(repo)
    settings["Addresses"]["Swarm"] = [f"/ip4/{address}/tcp/4001"]
    (repo / "config").write_text(json.dumps(settings))
    return repo


def network_command(
    cloud: dict[str, Path], *hosts: str, init: bool = True
) -> dict[str, private_network.Configured]:
    """``one-ipfs network init --hosts HOSTS`` (or ``join HOSTS``); what it did to each node."""
    return private_network.join(str(cloud["frontend"]), "~/.ipfs", list(hosts), None, new_network=init)


def peers_of(repo: Path) -> set[str]:
    """The peer IDs in a node's ``Peering.Peers``."""
    return {peer["ID"] for peer in config(repo)["Peering"]["Peers"]}


def ids(cloud: dict[str, Path], *names: str) -> set[str]:
    return {network.read_peer_id(cloud[name]) for name in names}


def start_daemons(cloud: dict[str, Path]) -> None:
    """As Kubo does when its daemon starts on each repository: it runs the settings written before."""
    for repo in cloud.values():
        (repo / API_FILE).write_text("/ip4/127.0.0.1/tcp/5001")


def test_network_join_keeps_the_hosts_the_frontend_already_peers_with(cloud: dict[str, Path]) -> None:
    network_command(cloud, "h1")

    done = network_command(cloud, "h2", init=False)

    assert set(done) == {"frontend", "h2"}  # h1 is not reconfigured: h2 and the frontend dial it
    assert peers_of(cloud["frontend"]) == ids(cloud, "h1", "h2")
    assert peers_of(cloud["h2"]) == ids(cloud, "frontend", "h1")
    assert peers_of(cloud["h1"]) == ids(cloud, "frontend")


def test_network_init_run_again_with_the_same_hosts_changes_nothing_and_leaves_no_restart_pending(
    cloud: dict[str, Path],
) -> None:
    network_command(cloud, "h1")
    network_command(cloud, "h2", init=False)
    learnt = network_command(cloud, "h1", "h2")
    start_daemons(cloud)

    again = network_command(cloud, "h1", "h2")
    reordered = network_command(cloud, "h2", "h1")

    assert {name for name, done in learnt.items() if done.changed} == {"h1"}  # it learnt h2
    for done in (again, reordered):
        assert done == dict.fromkeys(ADDRESSES, private_network.Configured(False, False))
    assert peers_of(cloud["h1"]) == ids(cloud, "frontend", "h2")


def test_network_join_leaves_out_every_entry_of_the_frontends_peering_that_is_no_peer(
    cloud: dict[str, Path],
) -> None:
    network_command(cloud, "h1")
    settings = config(cloud["frontend"])
    h1 = settings["Peering"]["Peers"][0]
    settings["Peering"]["Peers"] = [
        "12D3KooWB3RqapHnE7vrxBWmHbrfynv5H6xkCTDvj6ms5PEmkVWW",
        {"Addrs": ["/ip4/10.0.0.9/tcp/4001"]},
        {"ID": 7, "Addrs": []},
        {"ID": "../../etc/passwd", "Addrs": []},
        {"ID": "12D3KooWB3RqapHnE7vrxBWmHbrfynv5H6xkCTDvj6ms5PEmkVWW", "Addrs": "/ip4/10.0.0.9/tcp/4001"},
        {
            "ID": "12D3KooWB3RqapHnE7vrxBWmHbrfynv5H6xkCTDvj6ms5PEmkVWW",
            "Addrs": ["/ip4/10.0.0.9/tcp/4001 -rf"],
        },
        {"ID": "x" * 4096, "Addrs": ["/ip4/10.0.0.9/tcp/4001"]},
        h1,
    ]
    (cloud["frontend"] / "config").write_text(json.dumps(settings))

    network_command(cloud, "h2", init=False)

    assert config(cloud["frontend"])["Peering"]["Peers"][0] == h1
    assert peers_of(cloud["frontend"]) == ids(cloud, "h1", "h2")
    assert peers_of(cloud["h2"]) == ids(cloud, "frontend", "h1")


def test_a_host_rebuilt_with_a_new_identity_takes_the_place_of_its_old_one(
    cloud: dict[str, Path], tmp_path: Path
) -> None:
    network_command(cloud, "h1", "h2")
    old = ids(cloud, "h1")
    cloud["h1"] = a_node(tmp_path / "h1-rebuilt", ADDRESSES["h1"])

    network_command(cloud, "h1", init=False)

    assert ids(cloud, "h1") != old
    assert peers_of(cloud["frontend"]) == ids(cloud, "h1", "h2")
    assert peers_of(cloud["h1"]) == ids(cloud, "frontend", "h2")
