"""Marketplace apps under genuine oned 7.4.0: the time to publish a 1 GiB image into our ``ipfs`` marketplace
and into OpenNebula's ``http`` one, and to import the app into a datastore.

Publishing (``onemarketapp create`` from an image of an ``ipfs`` datastore) pins the image's CID in ours and
copies the image into the web server's folder in theirs; importing (``onemarketapp export``) into an ``ipfs``
datastore takes the CID in ours and downloads the image in theirs, and into OpenNebula's ``fs`` datastore
downloads it from either (our frontend node's gateway, their web server).
"""

from __future__ import annotations

from benchmarks.common import Bench, Check, Figure, Params, stopwatch, write_image
from testbed.genuine import GenuineOne, start_cloud
from testbed.one import Datastore, Image
from tests.support.datastores import ipfs_datastore_template
from tests.support.web import served_folder

VERSION = "7.4.0"
APP_MIB = 1024
"""The issue's 1 GiB, whatever the mode: 64 KiB runs of random data and of zeros alternating (512 MiB of
random data), written out in full (no holes)."""
MARKETS = ("ipfs", "http")
DESTINATIONS = ("ipfs", "fs")
"""The datastores an app is imported into: ours, and OpenNebula's own, which downloads from any market."""


def run(bench: Bench, params: Params) -> Figure:
    figure = Figure(
        "market",
        f"Publishing a {APP_MIB // 1024} GiB image and importing it: the ipfs marketplace vs OpenNebula's "
        f"http one, under genuine oned {VERSION}",
        f"Each repetition imports a new {APP_MIB} MiB image (64 KiB runs of random data and of zeros "
        "alternating, fresh content) into an `ipfs` datastore (`oneimage create --path`, not timed), then, "
        "for each marketplace in turn (the order alternating): publish, `onemarketapp create` from the "
        "image until the app is READY; import, `onemarketapp export` of the app into an `ipfs` datastore "
        "and into OpenNebula's `fs` datastore (`TM_MAD=ssh`), each until its image is READY, then deleted. "
        "ipfs: our marketplace, its catalogue under a key of the frontend's node; importing into `fs` reads "
        "the frontend node's gateway. http: OpenNebula's, `PUBLIC_DIR` a folder of the frontend that a "
        "Python `http.server` in the benchmark's process serves on loopback as `BASE_URL`. Everything runs "
        "in the publishing cloud: the ipfs marketplace's import finds the blocks on the frontend's node "
        "(another cloud would fetch them peer to peer). Ratios: http's time over ipfs's.",
    )
    cloud = start_cloud(lambda: bench.bed, VERSION)
    try:
        with served_folder() as (url, public):
            markets = {
                "ipfs": _ipfs_market(bench, cloud),
                "http": cloud.market_create(
                    {"NAME": "http", "MARKET_MAD": "http", "BASE_URL": url, "PUBLIC_DIR": str(public)}
                ),
            }
            source = cloud.datastore_create(ipfs_datastore_template(bench.bed, "ipfs-images"))
            destinations = {
                "ipfs": source,
                "fs": cloud.datastore_create({"NAME": "fs-images", "DS_MAD": "fs", "TM_MAD": "ssh"}),
            }
            for repetition in range(params.repetitions):
                image = _image(bench, cloud, source)
                order = MARKETS if repetition % 2 == 0 else MARKETS[::-1]
                for market in order:
                    _publish_and_import(cloud, figure, market, markets[market], image, destinations)
                cloud.image_delete(image)
                bench.bed.frontend.client(timeout=600).repo_gc(timeout=600)
    finally:
        cloud.frontend.stop()
    for step in ("publish", *(f"import into {destination}" for destination in DESTINATIONS)):
        http, ipfs = (figure.measure(f"{step}: {market}", "s").samples for market in ("http", "ipfs"))
        figure.measure(f"{step}: http / ipfs", "x").samples.extend(
            h / i for h, i in zip(http, ipfs, strict=True)
        )
    figure.checks += [
        Check(f"ipfs {step} faster than http", f"{step}: http / ipfs", 1.0, at_most=False)
        for step in ("publish", "import into ipfs")
    ]
    return figure


def _ipfs_market(bench: Bench, cloud: GenuineOne) -> int:
    """Our marketplace, its catalogue published under a new key of the frontend's node."""
    bench.ipfs(None, ["key", "gen", "bench-market"])
    return cloud.market_create(
        {
            "NAME": "ipfs",
            "MARKET_MAD": "ipfs",
            "IPFS_API": bench.bed.frontend.api,
            "IPFS_CATALOGUE_KEY": "bench-market",
        }
    )


def _image(bench: Bench, cloud: GenuineOne, datastore: Datastore) -> Image:
    seed = bench.next_seed()
    path = write_image(bench.workdir / f"app-{seed}.img", APP_MIB, seed)
    try:
        return cloud.image_create(datastore, name=f"app-{seed}", path=str(path))
    finally:
        path.unlink()


def _publish_and_import(
    cloud: GenuineOne,
    figure: Figure,
    market: str,
    market_id: int,
    image: Image,
    destinations: dict[str, Datastore],
) -> None:
    elapsed = stopwatch()
    app = cloud.market_app_create(market_id, image, f"{market}-{image.name}")
    figure.measure(f"publish: {market}", "s").samples.append(elapsed())
    if app.state != "READY" or app.size_mb != APP_MIB:
        raise RuntimeError(f"the {market} marketplace's app {app.id} is {app.state}, {app.size_mb} MB")
    for destination, datastore in destinations.items():
        elapsed = stopwatch()
        imported = cloud.market_app_export(app.id, datastore, f"{market}-{image.name}-{destination}")
        figure.measure(f"import into {destination}: {market}", "s").samples.append(elapsed())
        cloud.image_delete(imported)
    cloud.market_app_delete(app.id)
