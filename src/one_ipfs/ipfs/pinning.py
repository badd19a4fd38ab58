"""Pinning whole images with progress and two bounds, on the frontend and on hosts alike.

Standard library only: hosts ship it. A pin of a large image can take long and legitimately, so
the bound that catches content nobody provides is a stall (no new block for a while), not a short
total deadline; Kubo reports pin progress about twice a second, so counts that stop growing are
seen here.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import TypeVar

from one_ipfs.errors import IpfsTimeout
from one_ipfs.ipfs.rpc import KuboClient, PinProgress

PROGRESS_EVERY = 5.0
RAW_CODEC_PREFIX = "bafk"
SCATTER_WORKERS = 8
REASK_AFTER = 5.0
"""Seconds before a block that has not come is asked for again."""

T = TypeVar("T")


def pin_with_progress(
    client: KuboClient,
    cid: str,
    name: str,
    *,
    log: Callable[[str], None],
    timeout: float,
    stall_timeout: float,
    total_bytes: int | None = None,
) -> None:
    """Pin ``cid`` as ``name`` with progress lines; IpfsTimeout once no block came for ``stall_timeout``."""
    now = time.monotonic()
    state = {"nodes": -1, "bytes": -1, "changed": now, "logged": now}

    def on_progress(progress: PinProgress) -> None:
        now = time.monotonic()
        if (progress.nodes, progress.bytes) != (state["nodes"], state["bytes"]):
            state["nodes"], state["bytes"] = progress.nodes, progress.bytes
            state["changed"] = now
        elif now - state["changed"] > stall_timeout:
            raise _stalled(cid, stall_timeout)
        if now - state["logged"] >= PROGRESS_EVERY:
            state["logged"] = now
            log(_progress_line(cid, progress.bytes, total_bytes))

    client.pin_add(cid, name=name, progress=on_progress, timeout=timeout)


def ask_patiently(cid: str, ask: Callable[[float], T], *, stall_timeout: float, deadline: float) -> T:
    """``ask(timeout)`` for a block of ``cid``, asked again every REASK_AFTER seconds (a new want each
    time) until it answers, ``stall_timeout`` passed or the ``deadline`` (monotonic) came."""
    give_up = min(time.monotonic() + stall_timeout, deadline)
    while True:
        left = give_up - time.monotonic()
        if left <= 0:
            raise _stalled(cid, stall_timeout)
        try:
            return ask(min(REASK_AFTER, left))
        except IpfsTimeout:
            continue


def _stalled(cid: str, stall_timeout: float) -> IpfsTimeout:
    return IpfsTimeout(
        f"no block of {cid} arrived for {stall_timeout:g} s: no reachable node seems to provide it"
    )


def _progress_line(cid: str, done: int, total: int | None) -> str:
    if total:
        percent = min(100 * done // max(total, 1), 100)
        return f"fetching {cid}: {done >> 20} of {total >> 20} MiB ({percent}%)"
    return f"fetching {cid}: {done >> 20} MiB"


def scatter_fetch(
    client: KuboClient,
    cid: str,
    *,
    log: Callable[[str], None],
    timeout: float,
    stall_timeout: float,
    total_bytes: int | None = None,
) -> None:
    """Fetch an image's leaf blocks in an order of this host's own before pinning it.

    Hosts that deploy one image at once would otherwise all ask for the same blocks in DAG order,
    and the one node that has them (the frontend) would send each block to every host. In a
    random order each host soon holds blocks the others still want, and bitswap lets them trade.

    A block that has not come within REASK_AFTER is asked for again (Kubo cancels the want and sends
    a new one): a peer that restarted, or whose connection was replaced, may never answer the first
    want. The fetch stalls only when no block at all arrived for ``stall_timeout``, so a slow link
    that brings a block now and then is not mistaken for content nobody provides.
    """
    deadline = time.monotonic() + timeout
    leaves = _leaves(client, cid, stall_timeout, deadline)
    random.shuffle(leaves)
    last_block = [time.monotonic()]

    def fetch(leaf: str) -> int:
        while True:
            now = time.monotonic()
            if now >= deadline:
                raise IpfsTimeout(f"fetching {cid} did not finish within {timeout:g} s")
            quiet_for = now - last_block[0]
            if quiet_for >= stall_timeout:
                raise _stalled(cid, stall_timeout)
            wait = min(REASK_AFTER, stall_timeout - quiet_for, deadline - now)
            try:
                size = client.block_stat(leaf, timeout=wait)
            except IpfsTimeout:
                continue
            last_block[0] = time.monotonic()
            return size

    fetched, logged = 0, time.monotonic()
    with ThreadPoolExecutor(SCATTER_WORKERS) as pool:
        for size in pool.map(fetch, leaves):
            fetched += size
            if time.monotonic() - logged >= PROGRESS_EVERY:
                logged = time.monotonic()
                log(_progress_line(cid, fetched, total_bytes))


def _leaves(client: KuboClient, cid: str, stall_timeout: float, deadline: float) -> list[str]:
    """The distinct raw leaf blocks under ``cid``, reading only its interior nodes."""
    leaves: set[str] = set()
    pending = [cid]
    while pending:
        node = pending.pop()
        if node.startswith(RAW_CODEC_PREFIX):
            leaves.add(node)
            continue
        pending.extend(
            ask_patiently(cid, partial(_links, client, node), stall_timeout=stall_timeout, deadline=deadline)
        )
    return sorted(leaves)


def _links(client: KuboClient, node: str, wait: float) -> list[str]:
    return client.dag_links(node, timeout=wait)
