"""What genuine oned learns of sizes from the datastore driver: a datastore's capacity from MONITOR, which
oned runs by itself, and an image's size from STAT, which oned runs before every ``oneimage create`` that
names a path.
"""

from __future__ import annotations

import base64
import json

import pytest

from testbed.bed import Bed
from testbed.genuine import GenuineOne
from testbed.kubo import KUBO
from tests.support.datastores import ipfs_datastore_template
from tests.support.images import unixfs_file_node

pytestmark = [pytest.mark.bed, pytest.mark.opennebula]


def test_onedatastore_show_has_the_frontend_nodes_own_numbers(bed: Bed, one: GenuineOne) -> None:
    ds = one.datastore_create(ipfs_datastore_template(bed, "ipfs-monitored"))

    stats = bed.frontend.client().repo_stat()
    # The repository may have grown by a block of Kubo's own since oned's MONITOR ran.
    assert 0 <= (stats.repo_size >> 20) - ds.used_mb <= 1
    assert 0 < ds.total_mb <= stats.storage_max >> 20
    assert ds.free_mb == ds.total_mb - ds.used_mb


def zero_image_on(bed: Bed, host: str, gib: int) -> str:
    """A ``gib`` GiB all-zero image on one host's node, built block by block in a second.

    Its DAG is what ``ipfs add`` makes of zeros with 1 MiB raw leaves (one leaf block shared by every
    chunk), without hashing gigabytes: a leaf, a node of 1024 links per GiB, and a root.
    """

    def ipfs(argv: list[str], data: bytes) -> str:
        command = [str(KUBO), "--api=/ip4/127.0.0.1/tcp/5001", *argv]
        return bed.host_run(bed.host(host), command, input=data).stdout.decode().strip()

    def file_node(child: str, sizes: list[int]) -> str:
        document = {
            "Data": {"/": {"bytes": base64.b64encode(unixfs_file_node(sizes)).decode().rstrip("=")}},
            "Links": [{"Hash": {"/": child}, "Name": "", "Tsize": size} for size in sizes],
        }
        return ipfs(
            ["dag", "put", "--store-codec=dag-pb", "--input-codec=dag-json"], json.dumps(document).encode()
        )

    leaf = ipfs(["block", "put", "--cid-codec=raw"], bytes(1 << 20))
    gibibyte = file_node(leaf, [1 << 20] * 1024)
    return file_node(gibibyte, [1 << 30] * gib)


def test_oneimage_create_of_a_10_gib_cid_is_sized_by_stat_without_fetching_its_bytes(
    bed: Bed, one: GenuineOne
) -> None:
    ds = one.datastore_create(ipfs_datastore_template(bed, "ipfs-large", DATASTORE_CAPACITY_CHECK="NO"))
    cid = zero_image_on(bed, "h2", 10)
    repo_before = bed.frontend.client().repo_stat().repo_size

    image = one.image_create(ds, name="ten-gib", path=f"/ipfs/{cid}")

    assert image.size_mb == 10240
    assert image.template["IPFS_CID"] == cid
    # The image's few distinct blocks came over, not ten GiB of zeros.
    assert bed.frontend.client().repo_stat().repo_size - repo_before < 4 << 20
    one.image_delete(image)
