"""``python -m one_ipfs.admin``: the same as the ``one-ipfs`` command."""

from one_ipfs.admin.cli import main

main()
