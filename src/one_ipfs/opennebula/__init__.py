"""Everything that talks to OpenNebula, for the drivers and the admin tool, knowing nothing of IPFS: the
XML documents oned hands a driver (``documents``), the output it expects back, its XML-RPC API, ``oned.conf``
and the remotes tree the drivers are installed into."""
