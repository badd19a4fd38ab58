"""The test bed: a frontend and hypervisor hosts on one machine, each in its own namespaces with a real Kubo
node and sshd (``bed``) and, when a test asks, IPFS Cluster peers (``cluster``) or a marketplace network
several beds' frontends share (``market``), driven by genuine OpenNebula (``genuine``) or by the simulator of
oned (``one``)."""
