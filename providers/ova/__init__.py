"""OVA/OVF files as a migration source (``ova``)."""
