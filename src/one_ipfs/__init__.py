"""OpenNebula drivers that keep VM disk images in IPFS: oned runs an action of ``datastore``, ``transfer`` or
``market``, which reads and records through ``opennebula``, keeps content on the frontend's Kubo node through
``image_store`` and ``ipfs``, and has hosts deploy disks through ``hosts`` to ``host``; ``admin`` is the
``one-ipfs`` command that installs and checks it all.

Everything a host runs (the host bundle: ``hosts.bundle.HOST_MODULES``) uses the standard library only,
because hosts have nothing but python3 and Kubo.
"""

__version__ = "0.1.0"
