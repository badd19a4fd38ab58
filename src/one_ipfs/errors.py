"""Every error the drivers raise on purpose.

``str(error)`` is the one line OpenNebula shows the user, so messages name the thing that is wrong
and, where there is one, what to do about it. Standard library only: hosts raise these too.
"""


class OneIpfsError(Exception):
    """Base of every error turned into OpenNebula's failure line."""

    exit_code = 1


class InvalidInput(OneIpfsError):
    """A template value, argument or driver action that cannot be accepted as given."""


class InvalidIpfsPath(InvalidInput):
    """A PATH, SOURCE or CID that names no IPFS content in an accepted form (``ipfs/paths.py``)."""


class NotSupported(OneIpfsError):
    """An action this datastore cannot perform for this image or disk."""


class ImmutableImage(NotSupported):
    """A persistent use of an image whose SOURCE names fixed content (``/ipfs/`` or ``/ipns/``)."""


class IpfsError(OneIpfsError):
    """A Kubo node did not do what was asked."""


class DaemonUnreachable(IpfsError):
    """No Kubo RPC API answers at the configured address."""


class ContentNotFound(IpfsError):
    """The path or CID does not exist, or no reachable node provides it."""


class IpfsTimeout(IpfsError):
    """A bounded wait on Kubo ran out (the client's deadline or Kubo's own ``timeout=``)."""


class CommandFailed(IpfsError):
    """Kubo answered with an error message of its own."""


class AccessRefused(CommandFailed):
    """Kubo refused the RPC secret sent, or its absence (``API.Authorizations``)."""


class StreamBroken(IpfsError):
    """A streaming response ended early or carried ``X-Stream-Error``."""


class ClusterError(OneIpfsError):
    """IPFS Cluster did not answer, refused a pin, or could not replicate it as far as the datastore asks."""


class OpenNebulaError(OneIpfsError):
    """oned refused or failed a request of its XML-RPC API (``one.vm.info``, ``one.image.update``...)."""


class ObjectMissing(OpenNebulaError):
    """oned has no such object (deleted, or never made)."""


class OnedUnreachable(OpenNebulaError):
    """Nothing answers oned's XML-RPC API at the endpoint, or it did not answer in time."""


class HostError(OneIpfsError):
    """A host could not be reached over ssh, or its side of an action failed."""


class Cancelled(OneIpfsError):
    """OpenNebula stopped the action (``backup_cancel``); what it had stored was released first."""


class StorageError(OneIpfsError):
    """A local file operation failed (disk full, permissions, missing file)."""
