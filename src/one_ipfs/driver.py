"""Entry point of every remotes executable: ``python -m one_ipfs.driver <kind> <action> ARGS``, ``kind``
being datastore, tm or market.

Which code runs for an action is answered by one table per driver (``datastore.actions.ACTIONS``,
``transfer.actions.ACTIONS``, ``market.actions.ACTIONS``); this module only picks the table and hands over
to the one place that turns results and errors into OpenNebula's output convention.
"""

from __future__ import annotations

import sys

from one_ipfs.opennebula.output import run_action


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] not in ("datastore", "tm", "market"):
        sys.stderr.write("usage: python -m one_ipfs.driver datastore|tm|market ACTION [ARGS...]\n")
        return 2
    kind, action, args = argv[0], argv[1], argv[2:]
    if kind == "datastore":
        from one_ipfs.datastore.actions import run as run_datastore

        return run_action(lambda: run_datastore(action, args, sys.stdin.buffer), f"{kind} {action}")
    if kind == "market":
        from one_ipfs.market.actions import run as run_market

        return run_action(lambda: run_market(action, args, sys.stdin.buffer), f"{kind} {action}")
    from one_ipfs.transfer.actions import run as run_transfer

    return run_action(lambda: run_transfer(action, args, sys.stdin.buffer), f"{kind} {action}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
