"""Errors raised by OS morphing.

They subclass ``core.errors.InvalidInput`` / ``SternaError`` so the activity layer maps them to
non-retryable Temporal errors whose message names the cause (an unsupported OS will not become
supported on a retry).
"""

from __future__ import annotations

from core.errors import InvalidInput, SternaError


class MorphingError(SternaError):
    """Base class of every OS-morphing failure."""

    code = "OSMorphingError"
    retryable = False


class InspectionError(MorphingError):
    """No operating system could be found on the disk, or it could not be read."""

    code = "OSInspectionError"


class UnsupportedOS(MorphingError, InvalidInput):
    """An OS was found but Sterna cannot morph it (family, version or target not supported)."""

    code = "UnsupportedOS"


class GuestCommandError(MorphingError):
    """A command run inside the guest (initramfs regeneration, a user script...) failed."""

    code = "GuestCommandError"

    def __init__(self, argv: list[str] | str, output: str) -> None:
        shown = argv if isinstance(argv, str) else " ".join(argv)
        super().__init__(f"guest command failed: {shown}: {output.strip()[-1500:]}")
        self.argv = argv
        self.output = output
