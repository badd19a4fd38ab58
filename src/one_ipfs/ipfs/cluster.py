"""The one client of IPFS Cluster's REST API, through which the frontend replicates image versions.

A cluster pin asks the cluster's peers (each beside a Kubo node) to hold a CID, at least ``minimum`` and at
most ``maximum`` of them; the cluster picks the peers and keeps the count up when one is lost. Only the
frontend talks to the cluster: hosts' deploy caches stay plain Kubo pins. Every call is bounded.
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from one_ipfs.errors import ClusterError, ContentNotFound, InvalidInput
from one_ipfs.ipfs.paths import parse_cid
from one_ipfs.ipfs.rpc import parse_api

Transport = Callable[[str, str, float], tuple[int, bytes]]
"""``(method, path with query, timeout) -> (HTTP status, body)``: the wire, replaced by a fake in tests."""
POLL_EVERY = 0.5
LOG_EVERY = 5.0
PINNED = "pinned"
PENDING = ("pinning", "pin_queued", "queued")
FAILED = ("pin_error", "cluster_error", "error", "unexpectedly_unpinned")
RECOVERABLE = ("pin_error", "unexpectedly_unpinned")
"""Failures a peer may mend when asked to pin again. A peer back from a partition can hold a pin in its
state with no pin operation queued for it (seen when the same CID was pinned, unpinned and pinned again
around the partition): it reports ``unexpectedly_unpinned`` until asked, which IPFS Cluster does by itself
only every ``pin_recover_interval``."""
MAX_BODY = 16 << 20


@dataclass(frozen=True)
class Replication:
    """How many cluster peers must hold a pin before it counts as saved, and how many may."""

    minimum: int
    maximum: int


@dataclass(frozen=True)
class PeerPin:
    """One cluster peer's view of a pin: ``pinned``, ``pinning``, ``pin_error``, ``remote`` (not its own)."""

    peer: str
    name: str
    status: str
    error: str


@dataclass(frozen=True)
class ClusterPin:
    cid: str
    allocations: tuple[str, ...]
    peers: tuple[PeerPin, ...]
    name: str = ""

    def count(self, *statuses: str) -> int:
        return sum(peer.status in statuses for peer in self.peers)

    def failures(self) -> list[PeerPin]:
        return [peer for peer in self.peers if peer.status in FAILED]

    def holders(self) -> list[str]:
        """The names of the peers that hold every block (their IDs' ends where they have no name)."""
        return [peer.name or peer.peer[-8:] for peer in self.peers if peer.status == PINNED]


@dataclass(frozen=True)
class Member:
    """A cluster peer: its ID, its name, and what is wrong with it (empty: nothing)."""

    peer: str
    name: str
    error: str


class ClusterClient:
    """A cluster peer's REST API at ``api`` (``http://host:port`` or ``/ip4/host/tcp/port``)."""

    def __init__(self, api: str, timeout: float = 60.0, transport: Transport | None = None) -> None:
        if timeout <= 0:
            raise InvalidInput(f"the IPFS Cluster timeout must be positive, not {timeout}")
        self.host, self.port = parse_api(api, "IPFS Cluster REST API")
        self.address = f"{self.host}:{self.port}"
        self.timeout = timeout
        self._transport = transport or self._http

    def id(self) -> str:
        """The answering peer's ID: the API is up."""
        return str(self._call("GET", "/id").get("id", ""))

    def pin(self, cid: str, *, name: str, replication: Replication) -> tuple[str, ...]:
        """Pin ``cid`` across the cluster (again: a pin's options are replaced); the peers allocated to it."""
        query = {
            "name": name,
            "mode": "recursive",
            "replication-min": str(replication.minimum),
            "replication-max": str(replication.maximum),
        }
        answer = self._call("POST", f"/pins/{_cid(cid)}?{urllib.parse.urlencode(query)}")
        return tuple(str(peer) for peer in answer.get("allocations") or ())

    def status(self, cid: str) -> ClusterPin:
        """What every peer reports of ``cid``; ContentNotFound when the cluster does not pin it."""
        return self._pin_status(self._call("GET", f"/pins/{_cid(cid)}"), cid)

    def statuses(self) -> list[ClusterPin]:
        """What every peer reports of every pin of the cluster's pinset."""
        return [
            self._pin_status(answer, "")
            for answer in self._values("GET", "/pins")
            if isinstance(answer, dict)
        ]

    def pinset(self) -> dict[str, Replication]:
        """Each pin's ``replication-min`` and ``-max`` (-1: on every peer), from the pinset itself."""
        return {
            str(pin.get("cid")): Replication(
                int(pin.get("replication_factor_min") or -1), int(pin.get("replication_factor_max") or -1)
            )
            for pin in self._values("GET", "/allocations?filter=all")
            if isinstance(pin, dict)
        }

    def recover(self, cid: str) -> None:
        """Ask every peer allocated to ``cid`` to pin it again where its Kubo node lost it or failed to pin
        it (IPFS Cluster does so by itself only every ``pin_recover_interval``, 12 minutes by default)."""
        self._values("POST", f"/pins/{_cid(cid)}/recover")

    def members(self) -> list[Member]:
        """Every peer of the cluster as the answering peer sees it, with what keeps it out, if anything."""
        found = []
        for peer in self._values("GET", "/peers"):
            if isinstance(peer, dict):
                ipfs = peer.get("ipfs")
                kubo = str(ipfs.get("error") or "") if isinstance(ipfs, dict) else ""
                error = str(peer.get("error") or "") or (f"its Kubo node: {kubo}" if kubo else "")
                found.append(
                    Member(str(peer.get("id", "")), str(peer.get("peername", "")), " ".join(error.split()))
                )
        return found

    def _pin_status(self, answer: dict[str, Any], cid: str) -> ClusterPin:
        peer_map = answer.get("peer_map") or {}
        if not isinstance(peer_map, dict):
            raise ClusterError(f"IPFS Cluster at {self.address} sent a pin status without a peer map")
        peers = tuple(
            PeerPin(
                str(peer),
                str(info.get("peername", "")),
                str(info.get("status", "")),
                str(info.get("error", "")),
            )
            for peer, info in sorted(peer_map.items())
            if isinstance(info, dict)
        )
        allocations = tuple(str(peer) for peer in answer.get("allocations") or ())
        return ClusterPin(str(answer.get("cid") or cid), allocations, peers, str(answer.get("name") or ""))

    def unpin(self, cid: str) -> None:
        """Remove ``cid`` from the cluster's pinset; ContentNotFound when it is not in it."""
        self._call("DELETE", f"/pins/{_cid(cid)}")

    def replicate(
        self, cid: str, *, name: str, replication: Replication, timeout: float, log: Callable[[str], None]
    ) -> ClusterPin:
        """Pin ``cid`` and return once ``replication.minimum`` peers hold every block of it.

        ClusterError once so many allocated peers failed that the minimum cannot be reached, or when it is
        not reached within ``timeout``; the pin itself is left for the caller to keep or remove. A peer
        whose failure is RECOVERABLE is asked to pin again, once, before its failure counts.
        """
        deadline = time.monotonic() + timeout
        allocations = self.pin(cid, name=name, replication=replication)
        logged = time.monotonic()
        recovered: set[str] = set()
        while True:
            state = self.status(cid)
            pinned = state.count(PINNED)
            if pinned >= replication.minimum:
                return state
            failures = state.failures()
            mendable = {f.peer for f in failures if f.status in RECOVERABLE} - recovered
            if mendable:
                self.recover(cid)
                recovered |= mendable
                failures = [f for f in failures if f.peer not in mendable]
            if len(allocations or state.allocations) - len(failures) < replication.minimum:
                reasons = "; ".join(f"{f.name or f.peer[-8:]}: {f.error or f.status}" for f in failures[:3])
                raise ClusterError(
                    f"IPFS Cluster cannot hold {cid} on {replication.minimum} peers ({reasons})"
                )
            if time.monotonic() >= deadline:
                raise ClusterError(
                    f"IPFS Cluster held {cid} on {pinned} of the {replication.minimum} peers needed "
                    f"after {timeout:g} s"
                )
            if time.monotonic() - logged >= LOG_EVERY:
                logged = time.monotonic()
                log(f"replicating {cid}: {pinned} of {replication.minimum} peers hold it")
            time.sleep(min(POLL_EVERY, max(deadline - time.monotonic(), 0)))

    def peers(self) -> list[str]:
        """The IDs of the cluster's peers as the answering peer knows them (a stream of JSON objects)."""
        return [str(peer.get("id", "")) for peer in self._values("GET", "/peers") if isinstance(peer, dict)]

    def allocatable_peers(self) -> list[str]:
        """The peers whose free space the answering peer knows: those the cluster may allocate pins to."""
        metrics = self._values("GET", "/monitor/metrics/freespace")
        flat = metrics[0] if len(metrics) == 1 and isinstance(metrics[0], list) else metrics
        return [str(m.get("peer", "")) for m in flat if isinstance(m, dict) and m.get("valid", True)]

    def _call(self, method: str, path: str) -> dict[str, Any]:
        values = self._values(method, path)
        if len(values) != 1 or not isinstance(values[0], dict):
            raise ClusterError(f"IPFS Cluster at {self.address} sent an unexpected answer to {method}")
        return values[0]

    def _values(self, method: str, path: str) -> list[Any]:
        """The JSON values of an answer: one, or a stream of them (``/peers``); an error status raised."""
        status, body = self._transport(method, path, self.timeout)
        shown = f"{method} {path.split('?', maxsplit=1)[0]}"
        values: list[Any] = []
        try:
            text, decoder, at = body.decode(), json.JSONDecoder(), 0
            while text[at:].strip():
                at += len(text[at:]) - len(text[at:].lstrip())
                value, at = decoder.raw_decode(text, at)
                values.append(value)
        except (ValueError, UnicodeDecodeError):
            raise ClusterError(f"IPFS Cluster at {self.address} answered {shown} with no JSON") from None
        error = values[0] if len(values) == 1 and isinstance(values[0], dict) else {}
        if status == 404:
            raise ContentNotFound(f"IPFS Cluster at {self.address}: {error.get('message', 'not found')!s}")
        if status >= 300:
            message = str(error.get("message", f"HTTP {status}"))[:300]
            raise ClusterError(f"IPFS Cluster at {self.address} refused {shown}: {message}")
        return values

    def _http(self, method: str, path: str, timeout: float) -> tuple[int, bytes]:
        connection = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            connection.request(method, path)
            response = connection.getresponse()
            return response.status, response.read(MAX_BODY)
        except TimeoutError:
            raise ClusterError(
                f"IPFS Cluster at {self.address} did not answer {method} within {timeout:g} s"
            ) from None
        except OSError as exc:
            raise ClusterError(
                f"no IPFS Cluster REST API answers at {self.address} ({exc.strerror or exc}): "
                "is ipfs-cluster-service running?"
            ) from None
        except http.client.HTTPException as exc:
            raise ClusterError(f"IPFS Cluster at {self.address} broke off {method}: {exc!r}") from None
        finally:
            connection.close()


def _cid(cid: str) -> str:
    """A CID checked before it goes into a URL path."""
    parse_cid(cid)
    return cid
