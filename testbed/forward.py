"""Reach a host's loopback-only Kubo RPC API from the test process in the root namespace, and back.

A host's node listens on 127.0.0.1:5001 inside the host's network namespace, as on a real hypervisor, and
nothing in the root namespace can connect there. A Forwarder listens on an ephemeral port of the root
namespace's loopback and, for each connection, opens the other end from inside the host's namespace
(``setns`` in a worker thread). The node itself is left exactly as configured: no extra listener, no socket
file, nothing exposed beyond loopback. ``outward`` turns it round: it listens on a loopback port inside the
namespace and connects to the root namespace's loopback (the frontend's cluster peer reaching its Kubo node).
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading

from testbed.system import connect_in_netns, listen_in_netns

_PIECE = 1 << 20


class Forwarder:
    """``127.0.0.1:<port>`` here -> ``127.0.0.1:<target_port>`` inside network namespace ``netns``."""

    def __init__(
        self,
        netns: str,
        target_port: int,
        connect_timeout: float = 5.0,
        *,
        port: int = 0,
        outward: bool = False,
    ) -> None:
        self.netns = netns
        self.target_port = target_port
        self.connect_timeout = connect_timeout
        self.outward = outward
        address = ("127.0.0.1", port)
        self._listener = listen_in_netns(netns, address) if outward else socket.create_server(address)
        self.port: int = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, name=f"forward-{netns}", daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        """Stop accepting (the shutdown wakes the blocked accept, which a close alone would not, and frees the
        port at once); open connections end when either side closes them."""
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()

    def _accept(self) -> None:
        _ignore_signals()
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        _ignore_signals()
        target = ("127.0.0.1", self.target_port)
        try:
            upstream = (
                socket.create_connection(target, timeout=self.connect_timeout)
                if self.outward
                else connect_in_netns(self.netns, target, self.connect_timeout)
            )
        except OSError:
            client.close()  # the caller sees a closed connection, as with a refused one
            return
        upstream.settimeout(None)
        back = threading.Thread(target=_pump, args=(upstream, client), daemon=True)
        back.start()
        _pump(client, upstream)
        back.join()
        client.close()
        upstream.close()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    """Copy until ``source`` ends, then pass the end on (half-close)."""
    _ignore_signals()
    try:
        while piece := source.recv(_PIECE):
            sink.sendall(piece)
    except OSError:
        pass
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)


def _ignore_signals() -> None:
    """Leave Ctrl-C and SIGTERM to the main thread: a signal the kernel hands to a worker thread would not
    interrupt the main thread's blocking call, so the bed's teardown would wait for it to return."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGHUP})
