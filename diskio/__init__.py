"""Sterna's disk data engine: one way to move disk bytes, under every provider.

- ``diskio.base``: the contract, ``DiskSource`` (size, extents, reads) and ``DiskTarget``
  (writes with a granularity, alignment and size limit; optionally read back).
- ``diskio.local``: ``open_local_source`` (raw via SEEK_DATA/SEEK_HOLE, other formats via
  ``diskio.qemu``) and ``LocalFileTarget`` (a sparse raw file).
- ``diskio.copier``: ``copy_disk`` -> ``CopyResult``; ``diskio.progress.TransferProgress``.
- ``diskio.checkpoint``: ``CheckpointFile`` and ``Checkpointer``, the resume point kept in a file beside
  the work as chunks complete (synced claims, and written ones that hold on the same boot).
- ``diskio.digest``: the engine's digest (XXH3-128), tagged with its algorithm; replica map codec.
- ``diskio.verify``: ``compare_digests``, the per-disk digest recomputed on both sides.
- ``diskio.convert``: ``convert_image``, ``qemu-img convert`` with progress; ``write_qcow2``, a disk read in
  place into a new qcow2 written and verified by the copier.
- ``diskio.qcow2``: ``Qcow2FileTarget``, a new qcow2 image written by the copier (clusters appended, metadata
  at ``flush``), compared in place as a raw file is.
- ``diskio.checked_convert``: ``convert_verified``, ``qemu-img convert`` checked chunk by chunk
  with the engine's digest (``diskio.imagemap`` reads an image and its backing chain in place via
  ``qemu-img map``).
- ``diskio.qemu``/``diskio.nbd``: images in any qemu format through ``qemu-nbd``.
- ``diskio.http``: ``HttpRangeSource``, a disk read with HTTP Range requests (datastore, lease, Glance, GCS).
- ``diskio.native``: the native lane, C (``_lane.c``, built at install by ``hatch_build.py``) that receives a
  plain-HTTP chunk, hashes, writes and reads it back without the GIL; the Python steps where it cannot.
- ``diskio.stream``: ``HttpStreamTarget``, a disk sent as one request body, in order (Glance's upload).
- ``diskio.keepalive``: ``beating``, progress reported while a transfer waits on work that moves no bytes.
"""
