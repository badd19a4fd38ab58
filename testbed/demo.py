"""``make demo``: one disk image added on the frontend, fetched by three hosts at once over the private swarm.

Each host fetches through its own Kubo node, the way the transfer driver will: ssh to the host as oneadmin
and run a little stdlib-only python3 there that pins the image and writes it to a file. The host-side code
(``one_ipfs.ipfs.rpc``) is shipped into the host's /var/tmp/one, where ``onehost sync`` would put it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from one_ipfs.ipfs.rpc import ImportSettings
from testbed.bed import Bed, Host

IMAGE_SIZE = 256 << 20
SOURCE = Path(__file__).resolve().parent.parent / "src" / "one_ipfs"

FETCH = """
import hashlib, json, sys, time
from one_ipfs.ipfs.rpc import KuboClient
cid, target = sys.argv[1], sys.argv[2]
client = KuboClient(timeout=120)
start = time.monotonic()
client.pin_add(cid, name="demo")
digest = hashlib.sha256()
with open(target, "wb") as out:
    for piece in client.cat(cid):
        out.write(piece)
        digest.update(piece)
print(json.dumps({"seconds": time.monotonic() - start, "sha256": digest.hexdigest()}))
"""


def make_image(path: Path) -> str:
    """A disk image that is half random data, half zeros (zeros deduplicate to one block); its sha256."""
    digest = hashlib.sha256()
    with path.open("wb") as out:
        for index in range(IMAGE_SIZE >> 20):
            piece = os.urandom(1 << 20) if index < (IMAGE_SIZE >> 21) else bytes(1 << 20)
            out.write(piece)
            digest.update(piece)
    return digest.hexdigest()


def ship_host_code(host: Host) -> None:
    """Put the stdlib-only package where ``onehost sync`` puts the remotes: the host's /var/tmp/one."""
    target = host.var_tmp_one / "one_ipfs"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(SOURCE, target, ignore=shutil.ignore_patterns("__pycache__"))
    for folder, dirs, files in os.walk(target):
        for name in [".", *dirs, *files]:
            os.chown(
                os.path.join(folder, name), host.var_tmp_one.stat().st_uid, host.var_tmp_one.stat().st_gid
            )


def fetch(bed: Bed, host: Host, cid: str) -> dict[str, object]:
    argv = ["env", "PYTHONPATH=/var/tmp/one", "python3", "-c", FETCH, cid, "/var/lib/one/demo.img"]
    result = bed.ssh(host, argv)
    if result.returncode != 0:
        return {"error": result.stderr.decode(errors="replace").strip()}
    answer: dict[str, object] = json.loads(result.stdout)
    return answer


def main() -> int:
    print("bringing up the test bed: frontend + 3 hosts ...", flush=True)
    with Bed.up(hosts=3) as bed:
        image = bed.root / "demo.img"
        digest = make_image(image)
        print(f"image: {image} ({IMAGE_SIZE >> 20} MiB, half random, half zeros), sha256 {digest[:16]}...")

        start = time.monotonic()
        cid = bed.frontend.client(timeout=120).add(image, settings=ImportSettings(), pin_name="demo").cid
        print(f"added on the frontend in {time.monotonic() - start:.1f} s: /ipfs/{cid}")

        for host in bed.hosts:
            ship_host_code(host)
        start = time.monotonic()
        with ThreadPoolExecutor(len(bed.hosts)) as pool:
            results = list(pool.map(lambda host: fetch(bed, host, cid), bed.hosts))
        print(f"fetched by {len(bed.hosts)} hosts at once in {time.monotonic() - start:.1f} s:")

        ok = True
        for host, result in zip(bed.hosts, results, strict=True):
            if "error" in result:
                ok = False
                print(f"  {host.name}: FAILED: {result['error']}")
                continue
            good = result["sha256"] == digest
            ok = ok and good
            verdict = "checksum ok" if good else "CHECKSUM MISMATCH"
            print(f"  {host.name} ({host.address}): {result['seconds']:.1f} s, {verdict}")
        print("tearing down ...", flush=True)
    print("done" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
