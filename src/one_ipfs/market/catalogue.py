"""The marketplace's catalogue: the list of its apps, a JSON document kept in IPFS under an IPNS name.

Whoever holds the name may write anything into it, so a catalogue read from IPFS is hostile input: the
document is capped, and each entry is checked on its own and refused with one line, so one bad entry
never hides the good ones. Every value ends up inside a quoted attribute of the template oned parses,
which is why quotes, backslashes and control characters are refused rather than escaped.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

from one_ipfs.errors import InvalidInput
from one_ipfs.ipfs.paths import parse_cid
from one_ipfs.opennebula.documents import MAX_SIZE_MB

SCHEMA = "one-ipfs-marketplace/1"
MAX_DOCUMENT = 8 << 20
MAX_APPS = 10_000
MAX_TEMPLATE64 = 64 << 10
FORMATS = ("raw", "qcow2")
_TEXT = {"name": 128, "description": 1024, "version": 64}
_PLAIN = re.compile(r'[^\x00-\x1f\x7f"\\]*')
_MD5 = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class CatalogueApp:
    """One app: its content by CID, and what oned shows of it."""

    name: str
    cid: str
    size_mb: int
    format: str
    md5: str
    regtime: int = 0
    description: str = ""
    version: str = ""
    template64: str = ""
    """The app's APPTEMPLATE64: the image template an export gives the new image."""

    def source(self, gateway: str | None) -> str:
        """The app's SOURCE: a URL of the marketplace node's ``gateway``, which OpenNebula's
        ``downloader.sh`` reads into any datastore and an ipfs datastore of that node takes by its CID,
        copying nothing; ``ipfs://<cid>``, which only ipfs datastores read, where the node serves none."""
        return f"{gateway}/ipfs/{self.cid}" if gateway else f"ipfs://{self.cid}"

    def monitor_template(self, gateway: str | None) -> str:
        """The app as oned's marketplace monitor reads it (``MarketPlaceApp::from_template64``)."""
        values = {
            "NAME": self.name,
            "SOURCE": self.source(gateway),
            "IMPORT_ID": self.cid,
            "ORIGIN_ID": "-1",
            "TYPE": "IMAGE",
            "FORMAT": self.format,
            "SIZE": str(self.size_mb),
            "MD5": self.md5,
            "REGTIME": str(self.regtime),
            "DESCRIPTION": self.description,
            "VERSION": self.version,
            "APPTEMPLATE64": self.template64,
        }
        return "".join(f'{key}="{value}"\n' for key, value in values.items())


@dataclass(frozen=True)
class Catalogue:
    apps: tuple[CatalogueApp, ...] = ()

    def get(self, name: str) -> CatalogueApp | None:
        return next((app for app in self.apps if app.name == name), None)

    def with_app(self, app: CatalogueApp) -> Catalogue:
        """This catalogue with ``app`` added, or replacing the app of the same name."""
        return replace(self, apps=(*(a for a in self.apps if a.name != app.name), app))

    def without(self, name: str) -> Catalogue:
        return replace(self, apps=tuple(a for a in self.apps if a.name != name))

    def to_bytes(self) -> bytes:
        """The document, deterministic: the same apps give the same bytes, hence the same CID."""
        document = {"schema": SCHEMA, "apps": [asdict(app) for app in self.apps]}
        return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def parse_catalogue(data: bytes, refuse: Callable[[str], None]) -> Catalogue:
    """The valid apps of a catalogue document; ``refuse`` gets one line per entry left out.

    A document that is not a catalogue at all raises InvalidInput.
    """
    if len(data) > MAX_DOCUMENT:
        raise InvalidInput(f"the catalogue is larger than {MAX_DOCUMENT >> 20} MiB")
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, ValueError):
        raise InvalidInput("the catalogue is not a JSON document") from None
    if not isinstance(document, dict) or document.get("schema") != SCHEMA:
        raise InvalidInput(f'the catalogue is not a {SCHEMA} document (its "schema" differs)')
    entries = document.get("apps")
    if not isinstance(entries, list):
        raise InvalidInput('the catalogue has no "apps" list')
    if len(entries) > MAX_APPS:
        refuse(f"the catalogue lists {len(entries)} apps: only the first {MAX_APPS} are read")
    apps: list[CatalogueApp] = []
    names: set[str] = set()
    for number, entry in enumerate(entries[:MAX_APPS]):
        try:
            app = parse_app(entry)
        except InvalidInput as exc:
            refuse(f"catalogue entry {number} refused: {exc}")
            continue
        if app.name in names:
            refuse(f"catalogue entry {number} refused: a second app named {app.name!r}")
            continue
        names.add(app.name)
        apps.append(app)
    return Catalogue(tuple(apps))


def parse_app(entry: Any) -> CatalogueApp:
    """One entry, checked field by field (unknown fields are ignored: a later schema may add some)."""
    if not isinstance(entry, dict):
        raise InvalidInput("it is not an object")
    texts = {field: _text(entry, field, limit) for field, limit in _TEXT.items()}
    if not texts["name"]:
        raise InvalidInput("it has no name")
    cid = entry.get("cid")
    if not isinstance(cid, str):
        raise InvalidInput("its cid is not text")
    parse_cid(cid)
    image_format = entry.get("format")
    if image_format not in FORMATS:
        raise InvalidInput(f"its format must be one of {', '.join(FORMATS)}")
    md5 = entry.get("md5")
    if not isinstance(md5, str) or not _MD5.fullmatch(md5):
        raise InvalidInput("its md5 is not 32 lower-case hexadecimal digits")
    template64 = entry.get("template64", "")
    if not isinstance(template64, str) or len(template64) > MAX_TEMPLATE64:
        raise InvalidInput(f"its template64 is not text of at most {MAX_TEMPLATE64} characters")
    try:
        base64.b64decode(template64, validate=True)
    except binascii.Error:
        raise InvalidInput("its template64 is not base64") from None
    return CatalogueApp(
        name=texts["name"],
        cid=cid,
        size_mb=_whole(entry, "size_mb", 1, MAX_SIZE_MB),
        format=image_format,
        md5=md5,
        regtime=_whole(entry, "regtime", 0, 2**63 - 1, default=0),
        description=texts["description"],
        version=texts["version"],
        template64=template64,
    )


def _text(entry: dict[str, Any], field: str, limit: int) -> str:
    value = entry.get(field, "")
    if not isinstance(value, str) or len(value) > limit:
        raise InvalidInput(f"its {field} is not text of at most {limit} characters")
    if not _PLAIN.fullmatch(value):
        raise InvalidInput(f"its {field} holds a quote, a backslash or a control character")
    return value


def _whole(entry: dict[str, Any], field: str, low: int, high: int, default: int | None = None) -> int:
    value = entry.get(field, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidInput(f"its {field} is not a whole number from {low} to {high}")
    return value
