"""The parts of ``oned.conf`` (and the driver managers' arguments) the simulator obeys.

Defaults are those of a stock OpenNebula frontend with the one-ipfs registration of
``../shared/docs/opennebula-driver-protocol.md`` §2.e: ``ssh`` as in ``share/etc/oned.conf``, ``ipfs`` as the
example there. Tests change them to see how the drivers behave under other settings (no ``TM_MAD_SYSTEM``
modes, a ``-w`` timeout, a DS_MAD left out of ``-d``...).
"""

from __future__ import annotations

from dataclasses import dataclass, field

Conf = dict[str, str]


def _default_tm_mad_conf() -> dict[str, Conf]:
    return {
        "ssh": {
            "NAME": "ssh",
            "LN_TARGET": "SYSTEM",
            "CLONE_TARGET": "SYSTEM",
            "SHARED": "NO",
            "DS_MIGRATE": "YES",
        },
        "ipfs": {
            "NAME": "ipfs",
            "LN_TARGET": "SYSTEM",
            "CLONE_TARGET": "SYSTEM",
            "SHARED": "NO",
            "TM_MAD_SYSTEM": "ssh,shared",
            "LN_TARGET_SSH": "SYSTEM",
            "CLONE_TARGET_SSH": "SYSTEM",
            "DISK_TYPE_SSH": "FILE",
            "LN_TARGET_SHARED": "SYSTEM",
            "CLONE_TARGET_SHARED": "SYSTEM",
            "DISK_TYPE_SHARED": "FILE",
            "DS_MIGRATE": "YES",
            "ALLOW_ORPHANS": "YES",
        },
    }


@dataclass
class OnedConf:
    """oned.conf values and driver manager options.

    ``datastore_mads``/``system_ds_tms``/``datastore_timeout`` are one_datastore's ``-d``/``-s``/``-w``;
    ``tm_mads`` is one_tm's ``-d`` (None = every driver folder, OpenNebula's default). ``convention``
    selects how DS scripts are called: ``current`` (id in argv, base64 on stdin, 6.8+) or ``pre-6.8``.
    """

    datastore_location: str = "/var/lib/one//datastores"
    scripts_remote_dir: str = "/var/tmp/one"
    default_device_prefix: str = "sd"
    default_cdrom_device_prefix: str = "hd"
    tm_mad_conf: dict[str, Conf] = field(default_factory=_default_tm_mad_conf)
    datastore_mads: tuple[str, ...] | None = None
    system_ds_tms: tuple[str, ...] = ("shared", "ssh", "ceph")
    datastore_timeout: float | None = None
    tm_mads: tuple[str, ...] | None = None
    convention: str = "current"
