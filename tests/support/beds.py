"""One bed at a time for the test session (the simulator's, then one per genuine OpenNebula version), and the
layout of a bed beside it."""

from __future__ import annotations

from testbed.bed import Bed, Layout

HOSTS = 4
PORT_SHIFT = 50


def fresh_layout(session: Layout) -> Layout:
    """A bed beside the session's: the last /28 of its network, its prefix with a ``p``, its frontend
    ports + 50 (a more specific route, so both run side by side)."""
    last = list(session.network.subnets(new_prefix=28))[-1]
    return Layout(
        prefix=f"{session.prefix}p",
        frontend_address=str(last.network_address + 1),
        prefix_length=28,
        extra_offset=13,
        frontend_api_port=session.frontend_api_port + PORT_SHIFT,
        frontend_gateway_port=session.frontend_gateway_port + PORT_SHIFT,
    )


class BedKeeper:
    """Holds at most one running bed of ``layout``, brought up for one purpose (``simulator``,
    ``oned-7.4.0``): asking for another purpose tears the current bed down first. A purpose whose bed
    was torn down is not brought back, since the fixtures built on it (the simulator's objects) are gone
    with it: the tests are ordered so that this never happens."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.purpose = ""
        self.running: Bed | None = None
        self.retired: set[str] = set()

    def take(self, purpose: str) -> Bed:
        if purpose == self.purpose and self.running is not None:
            return self.running
        if purpose in self.retired:
            raise RuntimeError(f"the {purpose} bed was already replaced: tests out of order")
        self.close()
        self.running = Bed.up(hosts=HOSTS, root=self.layout.root, layout=self.layout)
        self.purpose = purpose
        return self.running

    def close(self) -> None:
        if self.running is not None:
            self.running.down()
            self.retired.add(self.purpose)
        self.running = None
        self.purpose = ""
