"""Everything that talks to OpenNebula: the XML documents oned hands a driver, the output it expects back, its
XML-RPC API, ``oned.conf`` and the remotes tree the drivers are installed into."""
