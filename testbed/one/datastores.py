"""oned's datastores: ``onedatastore create`` as ``Datastore::insert`` fills the template from TM_MAD_CONF,
their monitoring, and the datastore driver requests the image manager sends through ``one_datastore``."""

from __future__ import annotations

import base64
import xml.etree.ElementTree as ET
from collections.abc import Mapping

from testbed.one import template as tmpl
from testbed.one.conf import OnedConf
from testbed.one.documents import (
    DATASTORE_TYPES,
    DISK_TYPES,
    Datastore,
    datastore_document,
    integer,
    set_text,
    template_get,
    to_string,
)
from testbed.one.failure import OneFailure
from testbed.one.managers import DatastoreDriverManager, DriverResult
from testbed.one.pools import DatastoreRef, Pools, b64, oid

FIRST_DATASTORE_ID = 100
SYSTEM = DATASTORE_TYPES.index("SYSTEM_DS")


class Datastores:
    """Datastores and the requests to their drivers; every reply is kept in ``exchanges``."""

    def __init__(
        self, pools: Pools, conf: OnedConf, manager: DatastoreDriverManager, exchanges: list[DriverResult]
    ) -> None:
        self.pools = pools
        self.conf = conf
        self.manager = manager
        self.exchanges = exchanges

    def create(self, template: Mapping[str, str]) -> Datastore:
        """``onedatastore create``, then the first monitoring cycle (oned's runs every
        MONITORING_INTERVAL_DATASTORE), so that the capacity check of the next image sees real numbers."""
        number = self.pools.store.next_id("datastore", FIRST_DATASTORE_ID)
        with self.pools.store.locked():
            self.allocate(number, template)
        self.monitor(number)
        return self.pools.datastore(number)

    def allocate(self, number: int, template: Mapping[str, str]) -> None:
        """``Datastore::insert``: the document, its TM_MAD_CONF attributes, DISK_TYPE and the default dirs."""
        values = {k.upper(): v for k, v in template.items()}
        ds_type = DATASTORE_TYPES.index(values.get("TYPE", "IMAGE_DS").upper() or "IMAGE_DS")
        attributes = self._tm_mad_attributes(
            values.get("TM_MAD", ""), ds_type, [(k, v) for k, v in values.items() if k != "NAME"]
        )
        disk_type = (values.get("DISK_TYPE") or "FILE").upper()
        attributes = [(n, v) for n, v in attributes if n != "DISK_TYPE"] + [("DISK_TYPE", disk_type)]
        if not {"SAFE_DIRS", "RESTRICTED_DIRS"} & {n for n, _ in attributes}:
            attributes += [("SAFE_DIRS", "/var/tmp"), ("RESTRICTED_DIRS", "/")]
        location = self.conf.datastore_location
        root = datastore_document(
            number,
            values.get("NAME", ""),
            ds_mad="-" if ds_type == SYSTEM else values.get("DS_MAD", ""),
            tm_mad=values.get("TM_MAD", ""),
            base_path=f"{location}{number}" if location.endswith("/") else f"{location}/{number}",
            ds_type=ds_type,
            disk_type=DISK_TYPES.get(disk_type, 0),
            attributes=attributes,
        )
        self.pools.store.write("datastore", number, root)

    def _tm_mad_attributes(
        self, tm_mad: str, ds_type: int, attributes: list[tmpl.Attribute]
    ) -> list[tmpl.Attribute]:
        """``Datastore::set_tm_mad``: what TM_MAD_CONF copies into the datastore template."""
        conf = self.conf.tm_mad_conf.get(tm_mad)
        if conf is None:
            raise OneFailure("one.datastore.allocate", f'TM_MAD named "{tm_mad}" is not defined in oned.conf')
        values = list(attributes)

        def replace(name: str, value: str) -> None:
            nonlocal values
            values = [(n, v) for n, v in values if n != name] + [(name, value)]

        if ds_type == SYSTEM:
            replace("SHARED", "YES" if conf["SHARED"].upper() == "YES" else "NO")
            replace("DS_MIGRATE", "NO" if conf.get("DS_MIGRATE", "YES").upper() == "NO" else "YES")
            values = [(n, v) for n, v in values if n not in ("LN_TARGET", "CLONE_TARGET")]
        else:
            modes = conf.get("TM_MAD_SYSTEM", "")
            if modes:
                replace("TM_MAD_SYSTEM", modes)
                for mode in filter(None, (m.strip().upper() for m in modes.split(","))):
                    for name in (f"LN_TARGET_{mode}", f"CLONE_TARGET_{mode}", f"DISK_TYPE_{mode}"):
                        replace(name, conf[name].upper())
            for name in ("LN_TARGET", "CLONE_TARGET"):
                replace(name, conf[name].upper())
            values = [(n, v) for n, v in values if n != "SHARED"]
        replace("ALLOW_ORPHANS", conf.get("ALLOW_ORPHANS", "NO"))
        return values

    def monitor(self, datastore: DatastoreRef) -> DriverResult:
        """One monitoring cycle of an image datastore (``ImageManager::monitor_datastore``)."""
        number = oid(datastore)
        root = self.pools.read("datastore", number)
        payload = b64(f"<DS_DRIVER_ACTION_DATA>{to_string(root)}</DS_DRIVER_ACTION_DATA>")
        result = self.request("MONITOR", number, payload)
        if not result.success:
            return result
        try:
            reply = tmpl.parse(base64.b64decode(result.info).decode(errors="replace"))
        except (tmpl.TemplateSyntaxError, ValueError):
            return result
        values = {n: v for n, v in reply if isinstance(v, str)}
        with self.pools.store.edit("datastore", number) as ds:
            for name in ("TOTAL_MB", "FREE_MB", "USED_MB"):
                try:
                    number_mb = int(float(values.get(name, "0")))
                except ValueError:
                    number_mb = 0
                set_text(ds, name, number_mb)
        return result

    def request(self, action: str, number: int, payload: str) -> DriverResult:
        """One request to the datastore driver manager, kept in ``exchanges``."""
        result = self.manager.request(action, number, payload, self.conf.convention)
        self.exchanges.append(result)
        return result

    def payload(self, image_xml: str, ds_id: int) -> str:
        """DS_DRIVER_ACTION_DATA of an image action: the image's document, then its datastore's."""
        ds_xml = to_string(self.pools.read("datastore", ds_id))
        return b64(f"<DS_DRIVER_ACTION_DATA>{image_xml}{ds_xml}</DS_DRIVER_ACTION_DATA>")

    def check_capacity(self, ds_root: ET.Element, size: int) -> None:
        """``Datastore::get_avail_mb``: refuses an image larger than the datastore's FREE_MB, unless its
        DATASTORE_CAPACITY_CHECK says otherwise."""
        node = ds_root.find("TEMPLATE")
        check = template_get(node, "DATASTORE_CAPACITY_CHECK").upper() if node is not None else ""
        if check in ("", "YES") and size > max(integer(ds_root, "FREE_MB"), 0):
            raise OneFailure("one.image.allocate", "Not enough space in datastore")
