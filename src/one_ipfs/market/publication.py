"""Where a marketplace's catalogue lives: a document in IPFS, its CID published under an IPNS key.

A marketplace that *publishes* names a key of the frontend's Kubo in ``IPFS_CATALOGUE_KEY``; the driver
records the catalogue's last CID on the frontend, so reading its own catalogue needs no name resolution.
A marketplace that *subscribes* names another cloud's catalogue in ``IPFS_CATALOGUE`` (``/ipns/<name>``),
resolved at every monitor.
"""

from __future__ import annotations

import fcntl
import io
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from one_ipfs import image_store
from one_ipfs.config import DatastoreConfig, state_dir
from one_ipfs.errors import InvalidInput, NotSupported
from one_ipfs.ipfs.paths import parse_cid, parse_ipfs_path
from one_ipfs.market.catalogue import MAX_DOCUMENT, Catalogue, parse_catalogue
from one_ipfs.opennebula.documents import MarketplaceTemplate
from one_ipfs.opennebula.output import log_error, log_info

KEY_ATTRIBUTE = "IPFS_CATALOGUE_KEY"
NAME_ATTRIBUTE = "IPFS_CATALOGUE"
_KEY_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")


def publishing_key(market: MarketplaceTemplate) -> str:
    """The Kubo key the catalogue is published under; a subscribing marketplace has none."""
    key = market.attributes.get(KEY_ATTRIBUTE, "")
    if not key:
        raise NotSupported(
            f"marketplace {market.id} publishes no catalogue: set {KEY_ATTRIBUTE} to a key of the "
            f"frontend's IPFS node (ipfs key gen NAME) to publish apps in it"
        )
    if not _KEY_NAME.fullmatch(key) or key == "self":
        raise InvalidInput(
            f"{KEY_ATTRIBUTE} must name a key of the frontend's IPFS node (letters, digits, '.', '_', '-'), "
            "other than the node's own 'self'"
        )
    return key


def current(market: MarketplaceTemplate, config: DatastoreConfig) -> Catalogue:
    """The marketplace's catalogue now: its own last one, or the one its IPFS_CATALOGUE names."""
    if market.attributes.get(KEY_ATTRIBUTE):
        publishing_key(market)
        record = _read_record(market.id)
        return Catalogue() if record is None else _read(f"/ipfs/{record}", config)
    subscribed = market.attributes.get(NAME_ATTRIBUTE, "")
    if not subscribed:
        raise InvalidInput(
            f"marketplace {market.id} names no catalogue: set {KEY_ATTRIBUTE} to publish one, "
            f"or {NAME_ATTRIBUTE} = /ipns/<name> to list another cloud's"
        )
    name = subscribed if subscribed.startswith("/ipns/") else f"/ipns/{subscribed}"
    given = parse_ipfs_path(name)
    if not given.is_mutable or given.subpath:
        raise InvalidInput(f"{NAME_ATTRIBUTE} must be an IPNS name, /ipns/<name>")
    path = image_store.client(config).name_resolve(given.path, timeout=config.stall_timeout)
    return _read(path, config)


def publish(market: MarketplaceTemplate, catalogue: Catalogue, config: DatastoreConfig) -> str:
    """Store ``catalogue``, publish it under the marketplace's key and return the IPNS name.

    The new document is pinned before the name moves to it, and the old one released after.
    """
    key = publishing_key(market)
    node = image_store.client(config)
    added = node.add(io.BytesIO(catalogue.to_bytes()), settings=config.import_settings, pin=False)
    hold_name = f"one-market{market.id}-catalogue"
    previous = _read_record(market.id)
    image_store.hold(added.cid, hold_name, config)
    try:
        name = node.name_publish(f"/ipfs/{added.cid}", key=key)
        _write_record(market.id, added.cid)
    except Exception:
        if added.cid != previous:
            image_store.release(added.cid, hold_name, config)
        raise
    if previous is not None and previous != added.cid:
        image_store.release(previous, hold_name, config)
    log_info(
        f"catalogue of marketplace {market.id} ({len(catalogue.apps)} apps) is {added.cid}, /ipns/{name}"
    )
    return name


@contextmanager
def locked(market_id: int) -> Iterator[None]:
    """One catalogue change at a time per marketplace: each one reads, changes and publishes it."""
    folder = state_dir() / "locks"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(folder / f"market{market_id}.lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _read(path: str, config: DatastoreConfig) -> Catalogue:
    data = b"".join(
        image_store.client(config).cat(path, length=MAX_DOCUMENT + 1, timeout=config.stall_timeout)
    )
    return parse_catalogue(data, log_error)


def _record_path(market_id: int) -> Path:
    return state_dir() / "markets" / f"{market_id}.json"


def _read_record(market_id: int) -> str | None:
    """The CID this frontend last published for the marketplace (None: it never published)."""
    try:
        record = json.loads(_record_path(market_id).read_bytes())
    except FileNotFoundError:
        return None
    except ValueError:
        raise InvalidInput(f"{_record_path(market_id)} is damaged: remove it, then publish again") from None
    cid = record.get("catalogue") if isinstance(record, dict) else None
    if not isinstance(cid, str):
        raise InvalidInput(f"{_record_path(market_id)} names no catalogue: remove it, then publish again")
    parse_cid(cid)
    return cid


def _write_record(market_id: int, cid: str) -> None:
    path = _record_path(market_id)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    scratch = path.with_suffix(".tmp")
    scratch.write_text(json.dumps({"catalogue": cid}) + "\n", encoding="utf-8")
    os.replace(scratch, path)
