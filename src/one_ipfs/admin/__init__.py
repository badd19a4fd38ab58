"""The ``one-ipfs`` command an admin runs on the frontend: it installs the drivers into OpenNebula and builds
and checks the private IPFS network, asking oned through ``opennebula``, each node through ``ipfs`` and each
host through the channel to the hosts (``hosts``) or, for what runs there before the drivers, ``remote``."""
