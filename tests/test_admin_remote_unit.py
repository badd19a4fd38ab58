"""What the admin tool asks a Kubo node (doctor's ``probe``, what ``one-ipfs images`` says it holds), against
a fake node: the drivers' client does the asking, so Kubo's answers and refusals reach the admin as is."""

from __future__ import annotations

import pytest

from one_ipfs.admin import images
from one_ipfs.admin.nodes import FRONTEND
from one_ipfs.config import load_config
from one_ipfs.errors import AccessRefused, ContentNotFound, DaemonUnreachable
from one_ipfs.host import probe
from one_ipfs.ipfs.transport import Call
from tests.support.kubo_wire import FakeNode, Reply

HELD, MISSING, UNREACHABLE = "bafyheld", "bafymissing", "bafyunreachable"
PEER = "12D3KooWPeer"


def use(node: FakeNode, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(probe, "_kubo", lambda api, auth: node.client())


def refuse(call: Call) -> dict[str, str]:
    raise AccessRefused(f"ipfs {call.label}: Kubo refused access (HTTP 403)")


def stat(call: Call) -> dict[str, object]:
    cid = call.args[0].removeprefix("/ipfs/")
    if cid == MISSING:
        raise ContentNotFound("ipfs files stat: block was not found locally (offline)")
    if cid == UNREACHABLE:
        raise DaemonUnreachable("ipfs files stat: cannot reach the Kubo RPC API at 127.0.0.1:9")
    return {"Hash": cid, "Size": 5, "Local": True, "SizeLocal": 5}


def test_a_daemon_that_answers_is_up_with_its_facts_and_one_that_refuses_the_secret_is_an_auth_problem(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    answers: dict[str, Reply] = {
        "version": {"Version": "0.43.0"},
        "id": {"ID": PEER, "AgentVersion": "kubo/0.43.0"},
        "swarm/peers": {
            "Peers": [{"Peer": "12D3KooWB", "Addr": "/ip4/10.0.0.2"}, {"Peer": "12D3KooWA", "Addr": ""}]
        },
        "repo/stat": {"RepoSize": 7, "StorageMax": 9},
        "config": {"Key": "Addresses.API", "Value": "/ip4/127.0.0.1/tcp/5001"},
    }
    node = FakeNode(answers)
    use(node, monkeypatch)

    daemon = probe.ask_daemon("http://127.0.0.1:5001")

    assert daemon == {
        "up": True,
        "version": "0.43.0",
        "peer_id": PEER,
        "peers": ["12D3KooWA", "12D3KooWB"],
        "repo_size": 7,
        "storage_max": 9,
        "api_address": "/ip4/127.0.0.1/tcp/5001",
    }
    assert [call.params for call in node.asked("repo/stat")] == [{"size-only": "true"}]
    use(FakeNode({**answers, "version": refuse}), monkeypatch)
    assert probe.ask_daemon("http://127.0.0.1:5001") == {
        "up": False,
        "auth": True,
        "error": "the Kubo RPC API at http://127.0.0.1:5001 refused no secret",
    }


def test_holdings_ask_offline_and_tell_content_a_node_lacks_from_a_node_that_cannot_say(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    node = FakeNode({"files/stat": stat})
    monkeypatch.setattr(images, "KuboClient", lambda api, timeout, auth: node.client())
    config = load_config({}, {})

    held = {cid: images._presence(FRONTEND, cid, config) for cid in (HELD, MISSING, UNREACHABLE)}

    assert held[HELD] == {"local": True, "size_local": 5}
    assert held[MISSING] == {"local": False, "size_local": 0}
    assert "cannot reach the Kubo RPC API" in held[UNREACHABLE]["error"]
    assert all(call.params == {"with-local": "true", "offline": "true"} for call in node.calls)
