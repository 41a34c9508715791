"""The vSphere provider tests run against a real simulator (govmomi + Sterna's shim)."""

from tests.peers.vcsim.fixtures import vcsim_admin, vcsim_server, vsphere_connection_info

__all__ = ["vcsim_admin", "vcsim_server", "vsphere_connection_info"]
