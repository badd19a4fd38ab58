"""What the bed suites share: a VM's disks as its host holds them, images made from files, beds per module."""
