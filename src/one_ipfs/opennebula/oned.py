"""oned's XML-RPC API as drivers use it: objects read as XML, image attributes updated or allocated, chown.

TM actions get only argument strings, so what they need beyond them (a disk's image, the image's recorded
CID, the datastore's settings) comes from oned with oneadmin's credentials, as OpenNebula's own Ruby drivers
get it (``OpenNebula::Client``). Each is one HTTP request to oned instead of a Ruby CLI process (``onevm show
-x``..., about 0.3 s of CPU each): on a frontend where oned runs many transfers at once, those processes
were what made deploys slow.
"""

from __future__ import annotations

import http.client
import logging
import os
import re
import ssl
import xml.parsers.expat
import xmlrpc.client
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from one_ipfs.defaults import ONED_TIMEOUT
from one_ipfs.errors import ObjectMissing, OnedUnreachable, OpenNebulaError
from one_ipfs.opennebula.documents import (
    DatastoreTemplate,
    ImageTemplate,
    VmTemplate,
    parse_datastore_pool,
    parse_datastore_xml,
    parse_host_names,
    parse_image_pool,
    parse_image_xml,
    parse_user_ids,
    parse_vm_xml,
)

MAX_XML = 16 << 20
DEFAULT_ENDPOINT = "http://localhost:2633/RPC2"
ONEADMIN_FILES = Path("/var/lib/one/.one")
"""Where ``OpenNebula::Client`` looks last, whatever HOME is (oneadmin's home on a packaged frontend)."""
AUTHENTICATION = 0x0100
NO_EXISTS = 0x0400
"""oned's error codes (``Request::ErrorCode``) that get a message of their own."""
ALL_USERS = -2
"""A pool filter: every object, whoever owns it (what ``one* list`` asks for)."""
MERGE = 1
"""``one.image.update``'s type for merging into the template (``oneimage update --append``)."""
UNCHANGED = -1
ATTRIBUTE_NAME = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Endpoint:
    """oned's XML-RPC ``url`` and the ``session`` (``user:password``) sent with every call; ``auth`` says
    where the session was read, for the message when oned refuses it; ``timeout`` bounds each request. An
    https ``url``'s certificate is checked against the system's CAs and those in ``cert_dir``, or not at
    all without ``verify``."""

    url: str
    session: str
    auth: str = "the caller"
    timeout: float = ONED_TIMEOUT
    cert_dir: str = ""
    verify: bool = True


def endpoint(env: Mapping[str, str] | None = None) -> Endpoint:
    """Read as OpenNebula's CLI and Ruby drivers read them (``OpenNebula::Client``): the URL from
    ``ONE_XMLRPC``, else ``~/.one/one_endpoint``, else ``/var/lib/one/.one/one_endpoint``, else
    localhost:2633; the session from the file ``ONE_AUTH`` names, else ``~/.one/one_auth``, else
    ``/var/lib/one/.one/one_auth``; each request's bound from ``ONE_XMLRPC_TIMEOUT`` (whole seconds), else
    ``ONED_TIMEOUT``; for an https URL, extra CA certificates from the files in ``ONE_CERT_DIR``, and no
    check of oned's certificate at all when ``ONE_DISABLE_SSL_VERIFY`` is set (to anything, as Ruby reads
    it). oned's drivers inherit its environment, so under oned (running as oneadmin, HOME /var/lib/one)
    they read what oneadmin's CLI reads."""
    env = os.environ if env is None else env
    home = Path(env["HOME"]) / ".one" if env.get("HOME") else None
    url = env.get("ONE_XMLRPC") or _first_file("one_endpoint", home) or DEFAULT_ENDPOINT
    named = env.get("ONE_AUTH")
    auth = Path(named) if named and Path(named).is_file() else None
    auth = auth or next((f for f in _candidates("one_auth", home) if f.is_file()), None)
    if auth is None:
        raise OpenNebulaError(
            "no OpenNebula credentials: ONE_AUTH names no file and there is no ~/.one/one_auth or "
            f"{ONEADMIN_FILES / 'one_auth'}"
        )
    return Endpoint(
        url.strip(),
        _read(auth).strip(),
        str(auth),
        _timeout(env.get("ONE_XMLRPC_TIMEOUT")),
        cert_dir=env.get("ONE_CERT_DIR", ""),
        verify="ONE_DISABLE_SSL_VERIFY" not in env,
    )


def call(method: str, *params: object, at: Endpoint | None = None) -> object:
    """``method`` (``one.vm.info``...) with ``params`` after the session: oned's answer, or
    OpenNebulaError with one line (``ObjectMissing`` when the object does not exist, ``OnedUnreachable``
    when nothing answers in time)."""
    at = at or endpoint()
    log.info("oned %s %s", method, " ".join(map(str, params)))
    proxy = xmlrpc.client.ServerProxy(at.url, transport=_transport(at))
    try:
        answer = getattr(proxy, method)(at.session, *params)
    except TimeoutError:
        raise OnedUnreachable(f"oned at {at.url} did not answer {method} within {at.timeout:g} s") from None
    except ssl.SSLCertVerificationError as exc:
        raise OpenNebulaError(
            f"oned's certificate at {at.url} is not trusted ({exc.verify_message}): put its CA in the "
            "folder ONE_CERT_DIR names, or set ONE_DISABLE_SSL_VERIFY"
        ) from None
    except (OSError, http.client.HTTPException, xmlrpc.client.ProtocolError) as exc:
        raise OnedUnreachable(f"oned does not answer at {at.url} ({method}): {exc}") from None
    except xmlrpc.client.Fault as exc:
        raise OpenNebulaError(f"oned refused {method}: {exc.faultString}") from None
    except (xmlrpc.client.ResponseError, xml.parsers.expat.ExpatError, ValueError) as exc:
        raise OpenNebulaError(f"oned answered {method} with what is not XML-RPC: {exc}") from None
    return _result(method, answer, at)


def show_image(image_id: int) -> ImageTemplate:
    return parse_image_xml(_info("one.image.info", image_id))


def show_vm(vm_id: int) -> VmTemplate:
    return parse_vm_xml(_info("one.vm.info", vm_id))


def show_datastore(datastore_id: int) -> DatastoreTemplate:
    return parse_datastore_xml(_info("one.datastore.info", datastore_id))


def list_images() -> list[ImageTemplate]:
    return parse_image_pool(_text(call("one.imagepool.info", ALL_USERS, -1, -1)))


def list_datastores() -> list[DatastoreTemplate]:
    return parse_datastore_pool(_text(call("one.datastorepool.info")))


def list_host_names() -> list[str]:
    return parse_host_names(_text(call("one.hostpool.info")))


def update_image(image_id: int, attributes: Mapping[str, str]) -> None:
    """Merge ``attributes`` into the image's template (``oneimage update --append``)."""
    text = "".join(template_line(name, value) for name, value in attributes.items())
    call("one.image.update", image_id, text, MERGE)


def create_image(datastore_id: int, template: str) -> int:
    """``oneimage create`` of a template (``template_line``s) in a datastore: the new image's ID."""
    return _allocated(call("one.image.allocate", template, datastore_id, False))


def create_vm_template(template: str) -> int:
    return _allocated(call("one.template.allocate", template))


def delete_image(image_id: int) -> None:
    call("one.image.delete", image_id, False)


def chown(kind: str, object_id: int, username: str) -> None:
    """Give an ``image`` or ``template`` (``kind``) to the user who asked for it, named or by ID as
    ``one* chown`` takes it."""
    call(f"one.{kind}.chown", object_id, user_id(username), UNCHANGED)


def user_id(username: str) -> int:
    """A user's ID, from its name as the CLI resolves one (``one.userpool.info``)."""
    if username.isdigit():
        return int(username)
    users = parse_user_ids(_text(call("one.userpool.info")))
    if username not in users:
        raise OpenNebulaError(f"oned has no user named {username[:64]!r}")
    return users[username]


def template_line(name: str, value: str) -> str:
    """``NAME = "value"``, or refused: oned's template parser unescapes only \\" inside a quoted value."""
    if not ATTRIBUTE_NAME.match(name):
        raise OpenNebulaError(f"refusing to write the attribute {name[:40]!r}")
    if any(ch in value for ch in "\n\r\0\\"):
        raise OpenNebulaError(f"refusing to write a value with a newline or backslash to {name}")
    escaped = value.replace('"', '\\"')
    return f'{name} = "{escaped}"\n'


def _info(method: str, oid: int) -> str:
    """One object's XML, as ``one* show -x`` prints it (not decrypted)."""
    return _text(call(method, oid, False))


def _result(method: str, answer: object, at: Endpoint) -> object:
    """oned's ``[success, value or message, error code, ...]``."""
    if not isinstance(answer, list) or len(answer) < 2:
        raise OpenNebulaError(f"oned answered {method} with {str(answer)[:80]!r}")
    if answer[0] is True:
        return answer[1]
    message = " ".join(str(answer[1]).split())[:500] or f"[{method}] failed"
    code = answer[2] if len(answer) > 2 else 0
    if code == NO_EXISTS:
        raise ObjectMissing(message)
    if code == AUTHENTICATION:
        raise OpenNebulaError(f"oned refused the session from {at.auth}: {message}")
    raise OpenNebulaError(message)


def _text(value: object) -> str:
    if not isinstance(value, str):
        raise OpenNebulaError(f"oned answered with a {type(value).__name__} where XML was expected")
    return value


def _allocated(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise OpenNebulaError(f"oned answered an allocation with {str(value)[:40]!r}, not an ID")
    return value


def _timeout(value: str | None) -> float:
    """``ONE_XMLRPC_TIMEOUT``: whole seconds, as OpenNebula's Ruby client takes it; unset or empty, the
    default."""
    if not value:
        return ONED_TIMEOUT
    if not value.strip().isdecimal() or int(value) == 0:
        raise OpenNebulaError(f"ONE_XMLRPC_TIMEOUT is {value[:20]!r}, not a whole number of seconds above 0")
    return float(int(value))


def _candidates(name: str, home: Path | None) -> list[Path]:
    return [*([home / name] if home else []), ONEADMIN_FILES / name]


def _first_file(name: str, home: Path | None) -> str:
    found = next((f for f in _candidates(name, home) if f.exists()), None)
    return _read(found) if found else ""


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise OpenNebulaError(f"cannot read {path}: {exc.strerror}") from None


def _transport(at: Endpoint) -> xmlrpc.client.Transport:
    """The transport of the endpoint's scheme: http, or https checked as OpenNebula's Ruby client does."""
    if at.url.startswith("http://"):
        return _Transport(at.timeout)
    if at.url.startswith("https://"):
        return _SafeTransport(at.timeout, context=_tls(at))
    raise OpenNebulaError(f"oned's endpoint {at.url[:80]!r} is not an http:// or https:// URL (ONE_XMLRPC)")


def _tls(at: Endpoint) -> ssl.SSLContext:
    """The system's CAs and every file in ``cert_dir``; no check at all without ``verify``."""
    context = ssl.create_default_context()
    if not at.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    for path in sorted(Path(at.cert_dir).glob("*")) if at.cert_dir else []:
        if not path.is_file():
            continue
        try:
            context.load_verify_locations(cafile=path)
        except (OSError, ValueError) as exc:
            raise OpenNebulaError(f"cannot read a CA certificate from {path} (ONE_CERT_DIR): {exc}") from None
    return context


class _Transport(xmlrpc.client.Transport):
    """xmlrpc.client's transport with a bound on each request's time and on the size of its answer."""

    accept_gzip_encoding = False

    def __init__(self, timeout: float, **settings: Any) -> None:
        super().__init__(**settings)
        self.timeout = timeout

    def make_connection(self, host: tuple[str, dict[str, str]] | str) -> Any:  # HTTP(S)Connection
        connection = super().make_connection(host)
        connection.timeout = self.timeout
        return connection

    def parse_response(self, response: http.client.HTTPResponse) -> tuple[Any, ...]:
        body = response.read(MAX_XML + 1)
        if len(body) > MAX_XML:
            raise OpenNebulaError(f"oned answered with more than {MAX_XML >> 20} MiB")
        parser, unmarshaller = self.getparser()
        parser.feed(body)
        parser.close()
        return unmarshaller.close()


class _SafeTransport(_Transport, xmlrpc.client.SafeTransport):
    """The same over TLS (``settings``: the ``context``)."""
