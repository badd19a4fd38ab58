"""The marketplace source ``export`` gives and how a datastore recognises it again, without Kubo."""

from __future__ import annotations

import socket

import pytest

from one_ipfs import image_store
from one_ipfs.config import load_config
from one_ipfs.datastore import content

CID = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
CONFIG = load_config({}, defaults={})


class BoundGateway:
    """The one thing these functions ask the datastore's node: where its gateway is bound."""

    def __init__(self, bound: tuple[str, int] | None) -> None:
        self.bound = bound

    def gateway_bound(self) -> tuple[str, int] | None:
        return self.bound


@pytest.fixture
def bound(monkeypatch: pytest.MonkeyPatch) -> BoundGateway:
    node = BoundGateway(("127.0.0.1", 8080))
    monkeypatch.setattr(image_store, "client", lambda config: node)
    return node


def test_export_names_the_gateway_as_bound_and_the_frontend_when_bound_everywhere(
    bound: BoundGateway,
) -> None:
    assert content.gateway_url(CID, CONFIG) == f"http://127.0.0.1:8080/ipfs/{CID}"
    bound.bound = ("0.0.0.0", 8080)
    assert content.gateway_url(CID, CONFIG) == f"http://{socket.getfqdn()}:8080/ipfs/{CID}"
    bound.bound = ("::1", 8081)
    assert content.gateway_url(CID, CONFIG) == f"http://[::1]:8081/ipfs/{CID}"


def test_only_the_datastores_own_gateway_url_is_taken_as_its_cid(bound: BoundGateway) -> None:
    assert (
        content.as_ipfs_path(f"http://127.0.0.1:8080/ipfs/{CID}/disk.img", CONFIG) == f"/ipfs/{CID}/disk.img"
    )
    for other in (
        f"http://127.0.0.1:8081/ipfs/{CID}",
        f"http://example.org:8080/ipfs/{CID}",
        f"http://127.0.0.1:8080/ipns/{CID}",
        f"http://127.0.0.1:8080/ipfs/{CID}?format=car",
        "http://127.0.0.1:99999/ipfs/x",
    ):
        assert content.as_ipfs_path(other, CONFIG) == other
    bound.bound = ("0.0.0.0", 8080)
    assert content.as_ipfs_path(f"http://{socket.getfqdn()}:8080/ipfs/{CID}", CONFIG) == f"/ipfs/{CID}"
    bound.bound = None
    assert (
        content.as_ipfs_path(f"http://127.0.0.1:8080/ipfs/{CID}", CONFIG)
        == f"http://127.0.0.1:8080/ipfs/{CID}"
    )
