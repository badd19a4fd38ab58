"""oned's XML-RPC API as the simulator serves it to the drivers, from the state folder.

Drivers call oned over XML-RPC (``one_ipfs.opennebula.oned``). Under the simulator they reach this server
on loopback, started and stopped with ``OneSim``, which hands them its endpoint and a session in
``ONE_XMLRPC`` and ``ONE_AUTH``, two of the places they read under genuine oned. Answers have oned's shape:
``[true, value, 0]``, or ``[false, "[one.image.info] Error getting image [7].", 0x400]``
(``Request::failure_message``). Only what drivers and ``one-ipfs`` call is served:
``one.{vm,image,datastore}.info``, ``one.{image,datastore,host}pool.info`` and ``one.image.update``, whose
template text is parsed with oned's rules (``testbed.one.template``).
"""

from __future__ import annotations

import socketserver
import ssl
import sys
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from xmlrpc.server import SimpleXMLRPCRequestHandler, SimpleXMLRPCServer

from testbed.one import template as tmpl
from testbed.one.documents import element, fill_template, template_attributes, to_string
from testbed.one.state import StateStore

AUTHENTICATION = 0x0100
NO_EXISTS = 0x0400
RPC_API = 0x1000
INTERNAL = 0x2000
"""oned's error codes (``Request::ErrorCode``)."""
POLL = 0.05
"""How soon ``close()`` is noticed: tests start and stop many simulators."""
_NOUN = {"vm": "virtual machine", "image": "image", "datastore": "datastore"}

Method = Callable[..., object]


class ApiFailure(Exception):
    """oned's failure answer: ``message`` (``[method] ...``) and ``code``."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


class ApiServer:
    """An XML-RPC server on 127.0.0.1 answering ``methods`` (name: function of the parameters after the
    session) for callers presenting ``session``, each request in a thread of its own as oned's are; over
    https with ``tls`` (oned behind a TLS proxy, as an admin may serve it)."""

    def __init__(
        self, methods: Mapping[str, Method], session: str, tls: ssl.SSLContext | None = None
    ) -> None:
        self.session = session
        self._doors: dict[str, _Door] = {}
        self._server = _Server(("127.0.0.1", 0), requestHandler=_Handler, logRequests=False, allow_none=False)
        self._scheme = "http" if tls is None else "https"
        if tls is not None:
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
        for name, method in methods.items():
            self._server.register_function(self._answering(name, method), name)
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(POLL,), name="oned-api", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{self._scheme}://{host!s}:{port}/RPC2"

    @contextmanager
    def holding(self, name: str) -> Iterator[_Door]:
        """Calls of ``name`` wait at a door while inside, and are dropped unapplied when it ends: on cue, a
        driver killed before its request reached oned (what oned itself cannot be made to do)."""
        door = self._doors[name] = _Door()
        try:
            yield door
        finally:
            del self._doors[name]
            door.shut.set()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def _answering(self, name: str, method: Method) -> Callable[..., Any]:
        def answer(session: str, *params: Any) -> Any:
            door = self._doors.get(name)
            if door is not None:
                door.waiting.set()
                door.shut.wait()
                return [False, f"[{name}] the call never reached oned", INTERNAL]
            try:
                if session != self.session:
                    raise ApiFailure(
                        f"[{name}] User couldn't be authenticated, aborting call.", AUTHENTICATION
                    )
                return [True, method(*params), 0]
            except ApiFailure as failure:
                return [False, str(failure), failure.code]

        return answer


def state_methods(store: StateStore) -> dict[str, Method]:
    """What drivers call of oned, answered from ``store``."""

    def info(kind: str) -> Method:
        def show(oid: int, decrypt: bool = False) -> str:
            document = store.read_text(kind, oid)
            if document is None:
                raise ApiFailure(f"[one.{kind}.info] Error getting {_NOUN[kind]} [{oid}].", NO_EXISTS)
            return document

        return show

    def pool(kind: str) -> Method:
        def listing(*_filter: int) -> str:
            root = element(f"{kind.upper()}_POOL")
            for oid in store.ids(kind):
                found = store.read(kind, oid)
                if found is not None:
                    root.append(found)
            return to_string(root)

        return listing

    def update_image(oid: int, text: str, update_type: int) -> int:
        if update_type not in (0, 1):
            raise ApiFailure("[one.image.update] Wrong update type", RPC_API)
        try:
            attributes = tmpl.parse(text)
        except tmpl.TemplateSyntaxError as exc:
            raise ApiFailure(f"[one.image.update] Cannot update template. {exc}", INTERNAL) from None
        with store.locked():
            root = store.read("image", oid)
            if root is None:
                raise ApiFailure(f"[one.image.update] Error getting image [{oid}].", NO_EXISTS)
            node = root.find("TEMPLATE")
            if node is None:
                node = ET.SubElement(root, "TEMPLATE")
            if update_type == 1:
                attributes = tmpl.merge(template_attributes(node), attributes)
            fill_template(node, attributes)
            store.write("image", oid, root)
        return oid

    return {
        **{f"one.{kind}.info": info(kind) for kind in _NOUN},
        "one.imagepool.info": pool("image"),
        "one.datastorepool.info": pool("datastore"),
        "one.hostpool.info": pool("host"),
        "one.image.update": update_image,
    }


@dataclass
class _Door:
    """Where held calls wait (``ApiServer.holding``): ``waiting`` once one came, ``shut`` when it ends."""

    waiting: threading.Event = field(default_factory=threading.Event)
    shut: threading.Event = field(default_factory=threading.Event)


class _Server(socketserver.ThreadingMixIn, SimpleXMLRPCServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A caller that hung up (a driver killed on its timeout, an answer refused as too large) is no
        error of the server's."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(SimpleXMLRPCRequestHandler):
    rpc_paths = ("/RPC2",)
