"""The native lane: a chunk received from a plain socket, hashed, written and read back in C (``_lane.c``).

``ChunkMover`` uses it when the source hands over a raw body (``DiskSource.raw_body``: plain HTTP) and
the target a raw file (``DiskTarget.raw_file``); any other pair, and every repair, goes through the Python
steps. The library is loaded with ``ctypes``, which lets go of the GIL for the length of each call, so
lanes run side by side instead of taking turns per step. Absent (no compiler at install; see
``hatch_build.py``), ``LANE`` is None and the Python steps move every chunk: the same bytes, digests
and checks, at more CPU.
"""

from __future__ import annotations

import ctypes
import logging
from dataclasses import dataclass
from pathlib import Path

#: how a call ended (``_lane.c``'s enum)
DONE, MISMATCH, EOF, TIMEOUT, RECV, WRITE, READ = range(7)
#: a call moves at most this much before the lane looks at its stop flag: a cancel is seen within four
#: 256 KiB steps, and the GIL is taken eight times per 8 MiB chunk where the Python steps take it ~190
SLICE = 1024 * 1024


class _Result(ctypes.Structure):
    _fields_ = [("pos", ctypes.c_int64), ("written", ctypes.c_int64), ("zero", ctypes.c_int64),
                ("verified", ctypes.c_int64), ("reach", ctypes.c_int64), ("status", ctypes.c_int32),
                ("err", ctypes.c_int32)]


@dataclass
class Moved:
    """What one call did: ``pos`` is where the next step starts."""

    pos: int
    written: int
    zero: int
    verified: int
    #: the file is at least this long (0: the call wrote nothing it could vouch for)
    reach: int
    status: int
    err: int


class Lane:
    """The loaded library; one ``State`` per lane holds its chunk's running digest."""

    def __init__(self, path: Path) -> None:
        lib = ctypes.CDLL(str(path))
        lib.sterna_lane_state_new.restype = ctypes.c_void_p
        lib.sterna_lane_state_reset.argtypes = [ctypes.c_void_p]
        lib.sterna_lane_state_free.argtypes = [ctypes.c_void_p]
        lib.sterna_lane_digest.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.sterna_lane_state_copy.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
        lib.sterna_lane_update.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t]
        lib.sterna_lane_move.restype = None
        lib.sterna_lane_move.argtypes = [
            ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p, ctypes.c_int64,
            ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_int, ctypes.c_void_p,
            ctypes.POINTER(ctypes.c_int64), ctypes.POINTER(_Result),
        ]
        self._lib = lib

    def state(self) -> State:
        return State(self)


class State:
    """A chunk's XXH3-128 in C: ``reset`` per chunk, ``digest`` the same bytes as ``diskio.digest``'s."""

    def __init__(self, lane: Lane) -> None:
        self._lane, self._lib = lane, lane._lib
        self._ptr = self._lib.sterna_lane_state_new()
        if not self._ptr:
            raise MemoryError("XXH3_createState")

    def reset(self) -> None:
        self._lib.sterna_lane_state_reset(self._ptr)

    def update(self, data: bytes | bytearray | memoryview, /) -> None:
        view = memoryview(data).cast("B")
        if not view.nbytes:
            return
        piece = (ctypes.c_char * view.nbytes)
        buf = piece.from_buffer_copy(view) if view.readonly else piece.from_buffer(view)
        self._lib.sterna_lane_update(self._ptr, buf, view.nbytes)
        del buf

    def copy(self) -> State:
        twin = State(self._lane)
        self._lib.sterna_lane_state_copy(twin._ptr, self._ptr)
        return twin

    def digest(self) -> bytes:
        out = ctypes.create_string_buffer(16)
        self._lib.sterna_lane_digest(self._ptr, out)
        return out.raw

    def move(self, sock: int, fd: int, start: int, end: int, buf: bytearray, have: int, check: bytearray,
             step: int, *, verify: bool, timeout: float | None, steps: ctypes.c_int64) -> Moved:
        """Move the file's bytes ``[start, end)`` from ``sock`` into ``fd`` (see ``sterna_lane_move``);
        ``buf`` holds the first ``have`` bytes of the first step already, and ``steps`` counts each step
        as it begins."""
        if len(buf) < step or len(check) < step:
            raise ValueError("the lane's buffers are smaller than its step")
        res = _Result()
        data = (ctypes.c_char * len(buf)).from_buffer(buf)
        back = (ctypes.c_char * len(check)).from_buffer(check)
        wait = -1 if timeout is None else max(1, int(timeout * 1000))
        self._lib.sterna_lane_move(sock, fd, start, end, data, have, back, step, int(verify), wait, self._ptr,
                                   ctypes.byref(steps), ctypes.byref(res))
        del data, back  # exports of the bytearrays: they could not be resized while these live
        return Moved(res.pos, res.written, res.zero, res.verified, res.reach, res.status, res.err)

    def __del__(self) -> None:
        if getattr(self, "_ptr", None):
            self._lib.sterna_lane_state_free(self._ptr)
            self._ptr = None


def _load() -> Lane | None:
    path = Path(__file__).with_name("_lane.so")
    try:
        return Lane(path)
    except OSError as exc:  # not built (see hatch_build.py), or built against a libxxhash this host lacks
        logging.getLogger(__name__).warning("the native lane is not loaded (%s): HTTP bytes move in Python", exc)
        return None


#: the native lane, or None where it was not built
LANE: Lane | None = _load()
