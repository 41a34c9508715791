"""Development tooling around a whole stack, not part of a deployed worker.

| module | what for |
|---|---|
| ``launcher`` | the embedded stack: Temporal dev server, API and worker as child processes (``sterna up``, tests) |
| ``demo`` | ``make demo``: the stack plus one migration of a sample VM, with live progress |
| ``sample`` | the sample VMs of the ``local`` provider's inventories (demo, tests) |
| ``guest`` | the bootable Debian test guest, built with debootstrap and libguestfs |
"""
