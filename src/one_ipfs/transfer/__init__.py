"""The transfer driver (TM_MAD ``ipfs``): oned's transfer actions, run on the frontend, each handing its disk
work to the host side (``host``) through the channel to the hosts (``hosts``)."""
