"""The frontend's one channel to the hypervisors: ssh, the host bundle that hosts run, and the calls of
its commands. The drivers (transfer, datastore) and the admin tool reach hosts only through here; on the
far side of the ssh connection the host side (``host``) answers from the bundle this package ships."""
