"""OpenNebula's command-line tools, as drivers use them: show objects as XML and update image attributes.

TM actions get only argument strings, so what they need beyond them (a disk's image, the image's
recorded CID, the datastore's settings) comes from the CLI with oneadmin's credentials, as
OpenNebula's own TM scripts do.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import subprocess
import tempfile
from collections.abc import Mapping

from one_ipfs.errors import OpenNebulaError
from one_ipfs.opennebula.action import (
    DatastoreTemplate,
    ImageTemplate,
    VmTemplate,
    parse_datastore_pool,
    parse_datastore_xml,
    parse_image_pool,
    parse_image_xml,
    parse_vm_xml,
)

CLI_TIMEOUT = 60.0
ATTRIBUTE_NAME = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")
MAX_XML = 16 << 20

log = logging.getLogger(__name__)


def _run(argv: list[str]) -> str:
    log.info("running %s", shlex.join(argv))
    try:
        result = subprocess.run(argv, capture_output=True, timeout=CLI_TIMEOUT, check=False)
    except FileNotFoundError:
        raise OpenNebulaError(f"{argv[0]} is not installed on this frontend") from None
    except subprocess.TimeoutExpired:
        raise OpenNebulaError(f"{' '.join(argv[:3])} did not answer within {CLI_TIMEOUT:g} s") from None
    if result.returncode != 0:
        reason = result.stderr.decode(errors="replace").strip().splitlines()
        raise OpenNebulaError(f"{' '.join(argv[:3])} failed: {reason[-1] if reason else 'no message'}")
    if len(result.stdout) > MAX_XML:
        raise OpenNebulaError(f"{' '.join(argv[:3])} printed more than {MAX_XML >> 20} MiB")
    return result.stdout.decode(errors="replace")


def show_image(image_id: int) -> ImageTemplate:
    return parse_image_xml(_run(["oneimage", "show", "-x", str(image_id)]))


def show_vm(vm_id: int) -> VmTemplate:
    return parse_vm_xml(_run(["onevm", "show", "-x", str(vm_id)]))


def show_datastore(datastore_id: int) -> DatastoreTemplate:
    return parse_datastore_xml(_run(["onedatastore", "show", "-x", str(datastore_id)]))


def list_images() -> list[ImageTemplate]:
    return parse_image_pool(_run(["oneimage", "list", "-x"]))


def list_datastores() -> list[DatastoreTemplate]:
    return parse_datastore_pool(_run(["onedatastore", "list", "-x"]))


def update_image(image_id: int, attributes: Mapping[str, str]) -> None:
    """Merge ``attributes`` into the image's template (``oneimage update --append``)."""
    lines = []
    for name, value in attributes.items():
        if not ATTRIBUTE_NAME.match(name):
            raise OpenNebulaError(f"refusing to write the image attribute {name[:40]!r}")
        if any(ch in value for ch in "\n\r\0\\"):
            raise OpenNebulaError(f"refusing to write a value with a newline or backslash to {name}")
        # oned's template parser unescapes only \" inside a quoted value.
        escaped = value.replace('"', '\\"')
        lines.append(f'{name} = "{escaped}"\n')
    descriptor, path = tempfile.mkstemp(prefix="one-ipfs-", suffix=".tmpl")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as template:
            template.writelines(lines)
        _run(["oneimage", "update", str(image_id), path, "--append"])
    finally:
        os.unlink(path)
