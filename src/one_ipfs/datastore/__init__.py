"""The datastore driver (DS_MAD ``ipfs``): oned's image and backup datastore actions, run on the frontend,
each storing or reading an image's content on the frontend's Kubo node through ``image_store`` and recording
its versions (``images``) in oned through ``opennebula``."""
