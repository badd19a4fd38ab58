"""Everything that talks to Kubo (its RPC API, pins, fetches, the private network, the gateway, the hosts'
fleet coordination) and to IPFS Cluster (its REST API, replicated pins), knowing nothing of OpenNebula; the
drivers and the host side both build on it."""
