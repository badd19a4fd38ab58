"""The ``one-ipfs`` command an admin runs on the frontend: it installs the drivers into OpenNebula and
builds and checks the private IPFS network, reaching each host over ssh with ``remote`` (which runs there)."""
