"""Stand-ins for the OpenNebula commands drivers call: ``onevm/oneimage/onedatastore show -x``,
``onehost/oneimage/onedatastore list -x`` and ``oneimage update ID FILE [--append]``.

They run as separate processes, as the driver user, with ``ONE_SIM_STATE`` naming the state folder, and
answer like the Ruby CLI: the object's XML on stdout and exit 0, or one error line on stderr and exit 255
(``-1`` in Ruby) in the style ``[one.image.info] Error getting image [7].``. ``oneimage update`` parses the
file with oned's template rules (``testbed.one.template``) and replaces the image template, or merges into
it with ``--append``.
"""

from __future__ import annotations

import os
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from testbed.one import template as tmpl
from testbed.one.documents import (
    element,
    fill_template,
    template_attributes,
    text,
    to_string,
)
from testbed.one.state import STATE_ENV, StateStore

COMMANDS = ("onevm", "oneimage", "onedatastore", "onehost")
FAILED = 255

_KIND = {"onevm": "vm", "oneimage": "image", "onedatastore": "datastore", "onehost": "host"}
_API = {"vm": "one.vm", "image": "one.image", "datastore": "one.datastore", "host": "one.host"}
_NOUN = {"vm": "virtual machine", "image": "image", "datastore": "datastore", "host": "host"}
_POOL = {"vm": "VirtualMachinePool", "image": "ImagePool", "datastore": "DatastorePool", "host": "HostPool"}


class CliError(Exception):
    """An error the Ruby CLI would print before exiting with -1."""


def install(bin_dir: Path, python: str) -> None:
    """Write the four commands into ``bin_dir`` (put first on the drivers' PATH)."""
    for command in COMMANDS:
        path = bin_dir / command
        path.write_text(
            f"#!{python}\nimport sys\nfrom testbed.one.cli import main\nsys.exit(main(sys.argv))\n",
            encoding="utf-8",
        )
        path.chmod(0o755)


def _resolve(store: StateStore, kind: str, reference: str) -> int:
    """An id, or a name looked up like the CLI does (``OneHelper#to_id``)."""
    if reference.lstrip("-").isdigit():
        return int(reference)
    matches = []
    for oid in store.ids(kind):
        root = store.read(kind, oid)
        if root is not None and text(root, "NAME") == reference:
            matches.append(oid)
    if not matches:
        raise CliError(f"OpenNebula::{_POOL[kind]}: Error: {kind.upper()} named {reference} not found.")
    if len(matches) > 1:
        raise CliError(f"There are multiple resources with name {reference}.")
    return matches[0]


def _show(store: StateStore, kind: str, reference: str) -> str:
    oid = _resolve(store, kind, reference)
    document = store.read_text(kind, oid)
    if document is None:
        raise CliError(f"[{_API[kind]}.info] Error getting {_NOUN[kind]} [{oid}].")
    return document


def _pool(store: StateStore, kind: str) -> str:
    pool = element(f"{kind.upper()}_POOL")
    for oid in store.ids(kind):
        root = store.read(kind, oid)
        if root is not None:
            pool.append(root)
    return to_string(pool)


def _update_image(store: StateStore, reference: str, file_name: str, append: bool) -> None:
    oid = _resolve(store, "image", reference)
    try:
        content = Path(file_name).read_text(encoding="utf-8")
    except OSError as exc:
        raise CliError(f"Cannot read file {file_name}: {exc.strerror}") from None
    try:
        attributes = tmpl.parse(content)
    except tmpl.TemplateSyntaxError as exc:
        raise CliError(f"[one.image.update] Parse error: {exc}") from None
    with store.locked():
        root = store.read("image", oid)
        if root is None:
            raise CliError(f"[one.image.update] Error getting image [{oid}].")
        node = root.find("TEMPLATE")
        if node is None:
            node = ET.SubElement(root, "TEMPLATE")
        if append:
            attributes = tmpl.merge(template_attributes(node), attributes)
        fill_template(node, attributes)
        store.write("image", oid, root)


def run(command: str, args: list[str], store: StateStore) -> str:
    """Execute one CLI call and return its stdout; raises CliError for the Ruby CLI's failures."""
    flags = {arg for arg in args if arg.startswith("-")}
    words = [arg for arg in args if not arg.startswith("-")]
    kind = _KIND[command]
    as_xml = bool(flags & {"-x", "--xml"})
    if words[:1] == ["show"] and len(words) == 2 and command != "onehost":
        if not as_xml:
            raise CliError("the simulator only answers with -x (XML)")
        return _show(store, kind, words[1]) + "\n"
    if command in ("onehost", "oneimage", "onedatastore") and words == ["list"]:
        if not as_xml:
            raise CliError("the simulator only answers with -x (XML)")
        return _pool(store, kind) + "\n"
    if command == "oneimage" and words[:1] == ["update"] and len(words) == 3:
        _update_image(store, words[1], words[2], append=bool(flags & {"-a", "--append"}))
        return ""
    raise CliError(f"{command} {' '.join(args)}: not provided by the OpenNebula simulator")


def main(argv: list[str]) -> int:
    command = os.path.basename(argv[0])
    state = os.environ.get(STATE_ENV)
    if command not in COMMANDS or not state:
        sys.stderr.write(f"{command}: {STATE_ENV} is not set (run through the OpenNebula simulator)\n")
        return FAILED
    try:
        output = run(command, argv[1:], StateStore(Path(state), create=False))
    except CliError as exc:
        sys.stderr.write(f"{exc}\n")
        return FAILED
    sys.stdout.write(output)
    return 0
