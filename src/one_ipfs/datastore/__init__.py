"""The datastore driver (DS_MAD ``ipfs``): oned's image datastore actions, each storing or reading an image's
content in the frontend's Kubo node through ``ipfs`` and recording its versions in ``images``."""
