"""OS morphing: make a migrated guest boot and get its network on the target platform.

Public API::

    from osmorphing import morph_image, MorphOptions, MorphReport, Change, inspect_image, OsInfo

``morph_image`` / ``inspect_image`` work on real disk images through libguestfs; ``morph_guest`` and
``inspect_guest`` run the same logic on any ``Guest`` (``DirectoryGuest`` for plain directory trees).
"""

from osmorphing.detect import inspect_guest
from osmorphing.errors import GuestCommandError, InspectionError, MorphingError, UnsupportedOS
from osmorphing.guest import DirectoryGuest, Guest
from osmorphing.image import inspect_image, morph_image
from osmorphing.models import Change, MorphOptions, MorphReport, OsInfo, TargetNic
from osmorphing.morph import morph_guest

__all__ = [
    "Change",
    "DirectoryGuest",
    "Guest",
    "GuestCommandError",
    "InspectionError",
    "MorphOptions",
    "MorphReport",
    "MorphingError",
    "OsInfo",
    "TargetNic",
    "UnsupportedOS",
    "inspect_guest",
    "inspect_image",
    "morph_guest",
    "morph_image",
]
