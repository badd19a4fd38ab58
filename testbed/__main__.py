"""``python -m testbed up [--hosts N] [--rate MBIT] [--without FEATURE ...] | status | down``: a bed that
outlives the command."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from one_ipfs.errors import OneIpfsError
from testbed.bed import DEFAULT_ROOT, Bed, Layout, clear
from testbed.kubo import EXPERIMENTAL


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m testbed", description=__doc__)
    parser.add_argument(
        "--root", type=Path, default=DEFAULT_ROOT, help="the bed's folder (default: %(default)s)"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("up", help="start a frontend and N hosts (removing what an earlier bed left)")
    up.add_argument("--hosts", type=int, default=3)
    up.add_argument(
        "--rate", type=float, default=None, metavar="MBIT", help="limit every link to MBIT Mbit/s"
    )
    up.add_argument(
        "--without",
        action="append",
        default=[],
        choices=sorted(EXPERIMENTAL),
        help="run every node without this experimental Kubo feature (repeat for several)",
    )
    commands.add_parser("status", help="show the nodes of the running bed")
    commands.add_parser("down", help="stop everything and remove namespaces and links")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    try:
        if args.command == "up":
            bed = Bed.up(hosts=args.hosts, rate_mbit=args.rate, root=root)
            if args.without:
                bed.switch_off(args.without)
            bed.detach()
            print(bed.status())
        elif args.command == "status":
            print(Bed.load(root).status())
        else:
            layout = Bed.load(root).layout if (root / "state.json").exists() else Layout()
            clear(root, layout)
            print(f"bed at {root}: down")
    except OneIpfsError as exc:
        print(f"testbed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
