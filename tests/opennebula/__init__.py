"""The genuine suite: OpenNebula operations run with its own CLI against oned built from its source."""
