"""A marketplace catalogue read from IPFS is hostile: each bad entry is refused with one line. And what
one_market hands the marketplace driver (``MARKET_DRIVER_ACTION_DATA``), parsed once."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from typing import Any

import pytest

from one_ipfs import image_store
from one_ipfs.errors import InvalidInput
from one_ipfs.ipfs.rpc import DiskSpace, RepoStat
from one_ipfs.market import actions
from one_ipfs.market.catalogue import MAX_APPS, SCHEMA, Catalogue, CatalogueApp, parse_catalogue
from one_ipfs.opennebula.documents import ImportInfo, parse_market_action, read_market_action
from one_ipfs.opennebula.output import run_action

CID = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi"
IPNS_NAME = "k51qzi5uqu5dgx1jtuv7m22hhwkr43ss44sio8ffubmmrgo2j9ayodpb8jhng9"
GOOD: dict[str, Any] = {"name": "alpine", "cid": CID, "size_mb": 64, "format": "qcow2", "md5": "0" * 32}


def document(*apps: Any, schema: str = SCHEMA) -> bytes:
    return json.dumps({"schema": schema, "apps": list(apps)}).encode()


def read(data: bytes) -> tuple[Catalogue, list[str]]:
    refused: list[str] = []
    return parse_catalogue(data, refused.append), refused


def test_a_published_catalogue_reads_back_the_same_apps() -> None:
    app = CatalogueApp(**GOOD, regtime=1700000000, description="Alpine 3.20", version="3.20", template64="")
    catalogue = Catalogue().with_app(app)

    again, refused = read(catalogue.to_bytes())

    assert again == catalogue and refused == []
    assert catalogue.to_bytes() == again.to_bytes()


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"cid": "bafy-not-a-cid"}, "is not a valid CID"),
        ({"cid": 7}, "cid is not text"),
        ({"name": ""}, "it has no name"),
        ({"name": 'x" SOURCE="/etc/passwd'}, "name holds a quote"),
        ({"name": "a\nAPP=x"}, "control character"),
        ({"name": "n" * 10_000}, "at most 128"),
        ({"description": "\\"}, "description holds a quote, a backslash"),
        ({"size_mb": 10**30}, "size_mb is not a whole number"),
        ({"size_mb": True}, "size_mb is not a whole number"),
        ({"size_mb": "64"}, "size_mb is not a whole number"),
        ({"format": "vmdk"}, "format must be one of raw, qcow2"),
        ({"md5": "ZZ"}, "md5 is not 32"),
        ({"template64": "not base64!"}, "template64 is not base64"),
        ({"template64": "A" * (1 << 20)}, "template64 is not text of at most"),
    ],
)
def test_a_hostile_entry_is_refused_with_one_line_and_the_good_ones_stay(
    change: dict[str, Any], reason: str
) -> None:
    catalogue, refused = read(document({**GOOD, "name": "bad", **change}, GOOD))

    assert [app.name for app in catalogue.apps] == ["alpine"]
    assert len(refused) == 1 and refused[0].startswith("catalogue entry 0 refused: ") and reason in refused[0]
    assert "\n" not in refused[0]


def test_entries_that_are_not_objects_and_second_names_are_refused_one_by_one() -> None:
    catalogue, refused = read(document([], "x", None, GOOD, GOOD))

    assert len(catalogue.apps) == 1
    assert [line.split(":")[0] for line in refused] == [f"catalogue entry {n} refused" for n in (0, 1, 2, 4)]


def test_a_catalogue_with_too_many_entries_is_read_up_to_the_limit() -> None:
    apps = [{**GOOD, "name": f"app{n}"} for n in range(MAX_APPS + 5)]

    catalogue, refused = read(document(*apps))

    assert len(catalogue.apps) == MAX_APPS and len(refused) == 1 and "only the first" in refused[0]


@pytest.mark.parametrize(
    "data",
    [b"\xff\xfe", b"[]", b"{}", b'{"schema": "other"}', document(GOOD, schema="v0"), b"x" * (9 << 20)],
    ids=["binary", "list", "empty", "other-schema", "old-schema", "huge"],
)
def test_a_document_that_is_no_catalogue_is_one_error(data: bytes) -> None:
    with pytest.raises(InvalidInput):
        read(data)


def test_the_monitor_template_is_what_oned_reads_of_an_app() -> None:
    template64 = base64.b64encode(b'DEV_PREFIX="vd"\n').decode()
    app = CatalogueApp(**GOOD, regtime=5, template64=template64)

    lines = app.monitor_template("http://frontend:8080").splitlines()

    assert f'SOURCE="http://frontend:8080/ipfs/{CID}"' in lines and 'NAME="alpine"' in lines
    assert f'APPTEMPLATE64="{template64}"' in lines and 'SIZE="64"' in lines and 'TYPE="IMAGE"' in lines


def test_an_app_of_a_node_without_a_gateway_has_an_ipfs_url_only_ipfs_datastores_read() -> None:
    assert f'SOURCE="ipfs://{CID}"' in CatalogueApp(**GOOD).monitor_template(None).splitlines()


MARKET_IMPORT = f"""<MARKET_DRIVER_ACTION_DATA>
<MARKETPLACEAPP><ID>3</ID><NAME>alpine</NAME><SOURCE></SOURCE><MD5></MD5><SIZE>0</SIZE>
<DESCRIPTION>Alpine</DESCRIPTION><VERSION>0.0</VERSION><FORMAT></FORMAT><APPTEMPLATE64></APPTEMPLATE64>
<TYPE>1</TYPE></MARKETPLACEAPP>
<MARKETPLACE><ID>100</ID><NAME>apps</NAME><MARKET_MAD>ipfs</MARKET_MAD>
<TEMPLATE><IPFS_CATALOGUE_KEY>apps</IPFS_CATALOGUE_KEY></TEMPLATE></MARKETPLACE>
<DATASTORE><ID>1</ID><NAME>default</NAME><DS_MAD>fs</DS_MAD><TM_MAD>ssh</TM_MAD>
<BASE_PATH>/var/lib/one/datastores/1</BASE_PATH><TEMPLATE/></DATASTORE>
<IMPORT_SOURCE>http://127.0.0.1:8080/ipfs/{CID}</IMPORT_SOURCE><MD5>{"0" * 32}</MD5><SIZE>64</SIZE>
<FORMAT>qcow2</FORMAT><DISPOSE>NO</DISPOSE><DISPOSE_CMD></DISPOSE_CMD>
</MARKET_DRIVER_ACTION_DATA>"""


def test_one_market_s_import_is_read_from_its_base64_argument_with_the_export_s_answer() -> None:
    encoded = base64.b64encode(MARKET_IMPORT.encode()).decode()

    action = read_market_action([encoded, "3"], io.BytesIO())

    assert action.marketplace.id == 100 and action.marketplace.attributes["IPFS_CATALOGUE_KEY"] == "apps"
    assert action.app is not None and (action.app.id, action.app.name) == (3, "alpine")
    assert action.imported == ImportInfo(f"http://127.0.0.1:8080/ipfs/{CID}", "0" * 32, 64, "qcow2")
    assert action.datastore is not None and action.datastore.base_path == "/var/lib/one/datastores/1"


def test_a_market_action_without_its_marketplace_is_one_error() -> None:
    with pytest.raises(InvalidInput, match="no MARKETPLACE"):
        parse_market_action("<MARKET_DRIVER_ACTION_DATA/>")


class CatalogueNode:
    """The one node a listing marketplace's monitor asks: an IPNS name that resolves to ``document``."""

    def __init__(self, document: bytes) -> None:
        self.document = document

    def name_resolve(self, name: str, *, timeout: float | None = None) -> str:
        return f"/ipfs/{CID}"

    def cat(self, path: str, *, length: int | None = None, timeout: float | None = None) -> Iterator[bytes]:
        yield self.document[:length]

    def repo_stat(self) -> RepoStat:
        return RepoStat(repo_size=3 << 20, storage_max=10 << 30, num_objects=1, repo_path="")

    def repo_disk(self) -> DiskSpace:
        return DiskSpace(free=100 << 30, total=200 << 30)

    def gateway_bound(self) -> tuple[str, int]:
        return ("127.0.0.1", 8080)


def test_a_listing_marketplace_s_monitor_gives_oned_the_good_apps_and_one_line_per_bad_entry(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    hostile = document({**GOOD, "name": 'x"\nAPP="'}, GOOD, {**GOOD, "name": "b", "cid": "Qm" + "x" * 44})
    monkeypatch.setattr(image_store, "client", lambda config: CatalogueNode(hostile))
    monitor = MARKET_IMPORT.replace(
        "<IPFS_CATALOGUE_KEY>apps</IPFS_CATALOGUE_KEY>", f"<IPFS_CATALOGUE>/ipns/{IPNS_NAME}</IPFS_CATALOGUE>"
    )
    encoded = base64.b64encode(monitor.encode()).decode()

    status = run_action(lambda: actions.run("monitor", [encoded, "100"], io.BytesIO()), "market monitor")

    out, err = capsys.readouterr()
    apps = [line for line in out.splitlines() if line.startswith("APP=")]
    assert status == 0, err
    assert "TOTAL_MB=10240" in out.splitlines()
    assert [base64.b64decode(line[5:-1]).decode().splitlines()[:2] for line in apps] == [
        ['NAME="alpine"', f'SOURCE="http://127.0.0.1:8080/ipfs/{CID}"']
    ]
    assert [line[:33] for line in err.splitlines()] == [
        "ERROR: catalogue entry 0 refused:",
        "ERROR: catalogue entry 2 refused:",
    ]
