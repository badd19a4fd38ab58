"""The marketplace driver's actions, one function each, and the table of them.

one_market runs ``import`` after the image's datastore ``export`` (whose IMPORT_INFO it adds to the
action), ``delete`` when an app is removed and ``monitor`` every MONITORING_INTERVAL_MARKET. Each gets
the parsed MARKET_DRIVER_ACTION_DATA and the Kubo settings of the marketplace's template.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from dataclasses import asdict
from typing import BinaryIO

from one_ipfs import image_store
from one_ipfs.config import DatastoreConfig, load_config
from one_ipfs.datastore import content
from one_ipfs.errors import InvalidInput, InvalidIpfsPath
from one_ipfs.ipfs.paths import looks_like_ipfs_path, parse_ipfs_path
from one_ipfs.market import publication
from one_ipfs.market.catalogue import CatalogueApp, parse_app
from one_ipfs.opennebula.documents import (
    DatastoreTemplate,
    ImportInfo,
    MarketAction,
    MarketAppTemplate,
    read_market_action,
)
from one_ipfs.opennebula.output import dispatch, log_info


def import_app(action: MarketAction, config: DatastoreConfig) -> str:
    """Publish an image as an app: its CID held under the app's name and listed in the catalogue.

    An image of an ipfs datastore is taken by its CID, copying nothing; any other is added once.
    """
    app, imported = _app(action), _imported(action)
    market = action.marketplace
    publication.publishing_key(market)
    hold_name = _hold_name(market.id, app.id)
    cid, image_format = _hold_content(imported, action.datastore, hold_name, config)
    try:
        entry = parse_app(
            asdict(
                CatalogueApp(
                    name=app.name,
                    cid=cid,
                    size_mb=imported.size_mb or 0,
                    format=image_format,
                    md5=imported.md5,
                    regtime=int(time.time()),
                    description=app.description,
                    version=app.version,
                    template64=app.apptemplate64,
                )
            )
        )
        with publication.locked(market.id):
            catalogue = publication.current(market, config)
            if catalogue.get(app.name) is not None:
                raise InvalidInput(
                    f"the catalogue of marketplace {market.id} already lists an app {app.name!r}"
                )
            publication.publish(market, catalogue.with_app(entry), config)
    except Exception:
        image_store.release(cid, hold_name, config)
        raise
    log_info(f"app {app.id} is {cid}")
    source = entry.source(content.gateway_root(config))
    return f'SOURCE="{source}"\nMD5="{entry.md5}"\nSIZE="{entry.size_mb}"\nFORMAT="{entry.format}"'


def delete(action: MarketAction, config: DatastoreConfig) -> None:
    """Drop the app from the catalogue, then release what its import held (and only that)."""
    app = _app(action)
    market = action.marketplace
    if not market.attributes.get(publication.KEY_ATTRIBUTE):
        log_info(f"app {app.id} is listed by another cloud's catalogue: nothing held here to release")
        return
    try:
        cid = parse_ipfs_path(content.as_ipfs_path(app.source, config)).root
    except InvalidIpfsPath:
        log_info(f"app {app.id} has no SOURCE this marketplace gave: nothing to release")
        return
    with publication.locked(market.id):
        catalogue = publication.current(market, config)
        listed = catalogue.get(app.name)
        if listed is not None and listed.cid == cid:
            publication.publish(market, catalogue.without(app.name), config)
    image_store.release(cid, _hold_name(market.id, app.id), config)


def monitor(action: MarketAction, config: DatastoreConfig) -> str:
    """Capacity of the frontend's node, and one APP line per valid catalogue entry."""
    catalogue = publication.current(action.marketplace, config)
    used, total, free = image_store.capacity_mb(config)
    gateway = content.gateway_root(config)
    lines = [f"USED_MB={used}", f"TOTAL_MB={total}", f"FREE_MB={free}"]
    lines += [
        f'APP="{base64.b64encode(app.monitor_template(gateway).encode()).decode()}"' for app in catalogue.apps
    ]
    return "\n".join(lines)


ACTIONS: dict[str, Callable[[MarketAction, DatastoreConfig], str | None]] = {
    "import": import_app,
    "delete": delete,
    "monitor": monitor,
}


def run(name: str, args: list[str], stdin: BinaryIO) -> str | None:
    """Parse what one_market sent and run the action it names."""
    return dispatch("marketplace", ACTIONS, name, lambda: _configured(read_market_action(args, stdin)))


def _configured(action: MarketAction) -> tuple[MarketAction, DatastoreConfig]:
    return action, load_config(action.marketplace.attributes)


def _hold_content(
    imported: ImportInfo, datastore: DatastoreTemplate | None, hold_name: str, config: DatastoreConfig
) -> tuple[str, str]:
    """(CID, format) of the exported image, held under ``hold_name``."""
    path = content.as_ipfs_path(imported.source, config)
    if looks_like_ipfs_path(path):
        cid, _ = image_store.resolve(path, config)
        image_store.hold(cid, hold_name, config)
        log_info(f"taking {cid} by its CID: nothing copied")
        return cid, imported.format or content.read_format(cid, config)
    from one_ipfs.datastore import sources

    allowed = (datastore.base_path,) if datastore is not None and datastore.base_path else config.safe_dirs
    checksums = {"MD5": imported.md5} if imported.md5 else {}
    with sources.open_image(
        imported.source, allowed, config.restricted_dirs, config.stall_timeout, checksums
    ) as stream:
        added = image_store.client(config).add(stream.reader, settings=config.import_settings, pin=False)
        stream.verify()
        image_format = stream.format
    image_store.hold(added.cid, hold_name, config)
    log_info(f"added {added.size >> 20} MiB as {added.cid}")
    return added.cid, image_format


def _hold_name(market_id: int, app_id: int) -> str:
    """The name an app's content is held under, unique to the marketplace and the app."""
    return f"one-market{market_id}-app{app_id}"


def _app(action: MarketAction) -> MarketAppTemplate:
    if action.app is None:
        raise InvalidInput("the marketplace action carries no MARKETPLACEAPP")
    return action.app


def _imported(action: MarketAction) -> ImportInfo:
    if action.imported is None:
        raise InvalidInput("the import action carries no IMPORT_SOURCE: one_market adds it after the export")
    return action.imported
