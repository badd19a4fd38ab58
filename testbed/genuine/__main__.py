"""``python -m testbed.genuine`` (``make opennebula``): find or build every tested OpenNebula version."""

from testbed.genuine.installation import main

raise SystemExit(main())
