"""VMware vSphere migration source (``vmware_vsphere``): pyvmomi control plane, HTTP Range data plane."""
