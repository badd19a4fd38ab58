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
from collections.abc import Callable, Mapping

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
    _with_template(
        "".join(template_line(name, value) for name, value in attributes.items()),
        lambda path: _run(["oneimage", "update", str(image_id), path, "--append"]),
    )


def create_image(datastore_id: int, template: str) -> int:
    """``oneimage create`` of a template (``template_line``s): the new image's ID."""
    return _allocated(
        _with_template(template, lambda path: _run(["oneimage", "create", "-d", str(datastore_id), path]))
    )


def create_vm_template(template: str) -> int:
    return _allocated(_with_template(template, lambda path: _run(["onetemplate", "create", path])))


def delete_image(image_id: int) -> None:
    _run(["oneimage", "delete", str(image_id)])


def chown(kind: str, object_id: int, username: str) -> None:
    """Give an image or template (``kind``: oneimage, onetemplate) to the user who asked for it."""
    _run([kind, "chown", str(object_id), username])


def template_line(name: str, value: str) -> str:
    """``NAME = "value"``, or refused: oned's template parser unescapes only \\" inside a quoted value."""
    if not ATTRIBUTE_NAME.match(name):
        raise OpenNebulaError(f"refusing to write the attribute {name[:40]!r}")
    if any(ch in value for ch in "\n\r\0\\"):
        raise OpenNebulaError(f"refusing to write a value with a newline or backslash to {name}")
    escaped = value.replace('"', '\\"')
    return f'{name} = "{escaped}"\n'


def _with_template(text: str, use: Callable[[str], str]) -> str:
    descriptor, path = tempfile.mkstemp(prefix="one-ipfs-", suffix=".tmpl")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as template:
            template.write(text)
        return use(path)
    finally:
        os.unlink(path)


def _allocated(output: str) -> int:
    """The ID an ``one* create`` printed (``ID: 12``)."""
    match = re.search(r"^ID: ([0-9]{1,10})$", output, re.MULTILINE)
    if match is None:
        raise OpenNebulaError("the create command printed no ID")
    return int(match.group(1))
