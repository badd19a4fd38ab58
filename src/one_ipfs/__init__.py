"""OpenNebula datastore and transfer drivers that keep VM disk images in IPFS.

Everything a host needs (this package root, ``errors``, ``ipfs.rpc`` and ``host``) uses the
standard library only, because hosts have nothing but python3 and Kubo.
"""

__version__ = "0.1.0"
