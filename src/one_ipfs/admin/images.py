"""``one-ipfs images`` and ``one-ipfs prefetch``: the images of IPFS datastores and the nodes that hold them.

OpenNebula is read from oned's XML-RPC API (``one.imagepool.info``...), as the drivers read it; what a node
holds is asked of the node itself, offline, so that asking never fetches anything: the frontend's here, with
the host side's own ``has``, and each host's through the channel to the hosts (``protocol.Has``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from one_ipfs.admin.nodes import FRONTEND, Reply, ssh_destination
from one_ipfs.config import DatastoreConfig, load_config
from one_ipfs.defaults import ADMIN_RPC_TIMEOUT, CLUSTER_TIMEOUT, HOST_CALL_SLACK, PRESENCE_TIMEOUT
from one_ipfs.errors import InvalidInput, OneIpfsError
from one_ipfs.host.commands import has
from one_ipfs.host.protocol import Has, Warm
from one_ipfs.hosts.calls import call as call_host
from one_ipfs.hosts.calls import host_cache, host_node
from one_ipfs.images import ImageVersions
from one_ipfs.ipfs.cluster import ClusterClient
from one_ipfs.ipfs.rpc import KuboClient
from one_ipfs.opennebula import oned
from one_ipfs.opennebula.documents import DatastoreTemplate, ImageTemplate

IPFS_DS_MAD = "ipfs"
MAX_PARALLEL = 8

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IpfsImage:
    """An image of an IPFS datastore with its recorded history and the settings of its datastore."""

    image: ImageTemplate
    datastore: DatastoreTemplate
    config: DatastoreConfig
    versions: ImageVersions
    cid: str | None
    problem: str | None = None

    def row(self, holdings: Holdings, placement: Placement) -> dict[str, Any]:
        replicated = self.config.replication is not None
        return {
            "id": self.image.id,
            "name": self.image.name,
            "datastore_id": self.datastore.id,
            "datastore": self.datastore.name,
            "source": self.image.source,
            "cid": self.cid,
            "versions": [
                {"version": number, "cid": cid, **({"replicas": placement.of(cid)} if replicated else {})}
                for number, cid in self.versions.entries
            ],
            "replication_min": self.config.replication.minimum if self.config.replication else None,
            "replicas_unknown": placement.unknown.get(self.config.cluster_api) if replicated else None,
            "size_mb": self.image.size_mb,
            "held_by": holdings.held.get(self.cid or "", []),
            "unknown": holdings.unknown.get(self.cid or "", {}),
            "error": self.problem or (None if self.cid else "no content yet (no IPFS_CID recorded)"),
        }


@dataclass
class Holdings:
    """Per CID, the nodes that hold it fully and the nodes that could not say (with their reason)."""

    held: dict[str, list[str]] = field(default_factory=dict)
    unknown: dict[str, dict[str, str]] = field(default_factory=dict)


@dataclass
class Placement:
    """Per CID, the IPFS Cluster peers that hold every block of it; per cluster API that could not say,
    why."""

    held: dict[str, list[str]] = field(default_factory=dict)
    unknown: dict[str, str] = field(default_factory=dict)

    def of(self, cid: str) -> list[str]:
        return self.held.get(cid, [])


def placement(images: list[IpfsImage]) -> Placement:
    """Ask the cluster of every replicated datastore (its IPFS_CLUSTER_API) where its pins are, once each."""
    found = Placement()
    for api in sorted({i.config.cluster_api for i in images if i.config.replication is not None}):
        log.info("asking IPFS Cluster at %s where its pins are", api)
        try:
            for pin in ClusterClient(api, timeout=CLUSTER_TIMEOUT).statuses():
                found.held[pin.cid] = pin.holders()
        except OneIpfsError as exc:
            found.unknown[api] = str(exc)
    return found


def under_replicated(images: list[IpfsImage], found: Placement) -> list[tuple[IpfsImage, int, str]]:
    """Every version (image, number, CID) of a replicated datastore that fewer cluster peers hold than
    its IPFS_REPLICATION_MIN asks for, where its cluster could say."""
    return [
        (image, number, cid)
        for image in images
        if image.config.replication is not None and image.config.cluster_api not in found.unknown
        for number, cid in image.versions.entries
        if len(found.of(cid)) < image.config.replication.minimum
    ]


def ipfs_images() -> list[IpfsImage]:
    """Every image OpenNebula keeps in a datastore whose DS_MAD is ipfs, by id."""
    datastores = {ds.id: ds for ds in oned.list_datastores() if ds.ds_mad == IPFS_DS_MAD}
    configs = {ds_id: load_config(ds.attributes) for ds_id, ds in datastores.items()}
    found = []
    for image in oned.list_images():
        if image.datastore_id not in datastores:
            continue
        problem = None
        try:
            versions = ImageVersions.from_template(image.template)
        except InvalidInput as exc:
            versions, problem = ImageVersions(), str(exc)
        ds = image.datastore_id
        found.append(IpfsImage(image, datastores[ds], configs[ds], versions, versions.current_cid, problem))
    return sorted(found, key=lambda found_image: found_image.image.id or 0)


def find_image(id_or_name: str) -> IpfsImage:
    """The IPFS image named by id or by name (a name must be unique, as with ``oneimage``)."""
    images = ipfs_images()
    by_id = int(id_or_name) if id_or_name.isdigit() else None
    matches = [i for i in images if i.image.id == by_id or i.image.name == id_or_name]
    if not matches:
        raise InvalidInput(f"no image {id_or_name[:80]!r} in an IPFS datastore (see `one-ipfs images`)")
    if len(matches) > 1:
        ids = ", ".join(str(i.image.id) for i in matches)
        raise InvalidInput(f"several images are named {id_or_name[:80]!r} ({ids}): give the id")
    if matches[0].cid is None:
        raise InvalidInput(f"image {matches[0].image.id} has no content yet (no IPFS_CID recorded)")
    return matches[0]


def holdings(
    images: list[IpfsImage], hosts: list[str], progress: Callable[[Reply], None] | None = None
) -> Holdings:
    """Ask the frontend's node (each datastore's IPFS_API) and every host's (IPFS_HOST_API) what it holds."""
    with_cid = {i.cid: i.config for i in images if i.cid is not None}

    def ask(node: str) -> Reply:
        sent = time.time()
        failed: dict[tuple[str, str], dict[str, Any]] = {}
        held: dict[str, dict[str, Any]] = {}
        for cid, config in with_cid.items():
            # A node that could not answer for one CID is not asked again with the same API and secret: a
            # host ssh cannot reach would cost one connection timeout per image.
            api = (
                (config.api, config.api_auth_file)
                if node == FRONTEND
                else (config.host_api, config.host_api_auth_file)
            )
            held[cid] = failed.get(api) or _presence(node, cid, config)
            if "error" in held[cid]:
                failed[api] = held[cid]
        reply = Reply(node, {"held": held}, sent_at=sent, received_at=time.time())
        if progress is not None:
            progress(reply)
        return reply

    replies = {FRONTEND: ask(FRONTEND)}
    with ThreadPoolExecutor(max_workers=MAX_PARALLEL) as pool:
        replies.update(zip(hosts, pool.map(ask, hosts), strict=True))
    result = Holdings()
    for node, reply in replies.items():
        answers = reply.result.get("held", {})
        for cid in with_cid:
            state = answers.get(cid) or {"error": reply.error or "no answer"}
            if state.get("error"):
                result.unknown.setdefault(cid, {})[node] = state["error"]
            elif state.get("local"):
                result.held.setdefault(cid, []).append(node)
    return result


def prefetch(
    image: IpfsImage, hosts: list[str], progress: Callable[[Reply], None] | None = None
) -> dict[str, Reply]:
    """Have every host's node hold the image's current content, in its cache as an entry no disk uses yet
    (host ``warm``); per host its result or its error."""
    config = image.config
    request = Warm(
        cid=str(image.cid),
        node=host_node(config),
        timeout=config.transfer_timeout,
        stall_timeout=config.stall_timeout,
        cache=host_cache(config),
    )

    def warm(host: str) -> Reply:
        sent = time.time()
        destination = ssh_destination(host)
        log.info("%s: one-ipfs-host warm %s, over ssh %s", host, image.cid, destination)
        try:
            held = call_host(destination, request, timeout=config.transfer_timeout + HOST_CALL_SLACK)
        except OneIpfsError as exc:
            reply = Reply(host, {}, str(exc).removeprefix(f"{destination}: "), sent_at=sent)
        else:
            reply = Reply(host, {"cid": held.cid, "size": held.size}, sent_at=sent, received_at=time.time())
        if progress is not None:
            progress(reply)
        return reply

    with ThreadPoolExecutor(max_workers=MAX_PARALLEL) as pool:
        return dict(zip(hosts, pool.map(warm, hosts), strict=True))


def _presence(node: str, cid: str, config: DatastoreConfig) -> dict[str, Any]:
    """How much of ``cid`` a node holds (``local``, ``size_local``), or why it could not say (``error``)."""
    try:
        if node == FRONTEND:
            log.info("%s: asking its Kubo node, offline, whether it holds %s", node, cid)
            kubo = KuboClient(config.api, timeout=ADMIN_RPC_TIMEOUT, auth=config.api_authorization())
            presence = has(kubo, Has(cid=cid, timeout=PRESENCE_TIMEOUT))
        else:
            destination = ssh_destination(node)
            log.info("%s: one-ipfs-host has %s, over ssh %s", node, cid, destination)
            request = Has(cid=cid, node=host_node(config), timeout=PRESENCE_TIMEOUT)
            presence = call_host(destination, request, timeout=PRESENCE_TIMEOUT + HOST_CALL_SLACK)
    except OneIpfsError as exc:
        return {"error": str(exc).removeprefix(f"{ssh_destination(node)}: ")}
    return {"local": presence.local, "size_local": presence.size_local}
