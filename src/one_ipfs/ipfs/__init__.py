"""Everything that talks to Kubo (its RPC API, pins, fetches, the private network, the gateway, the hosts'
fleet coordination), knowing nothing of OpenNebula; the drivers and the host side both build on it."""
