"""Import Debian's Python bindings (python3-guestfs, python3-hivex) from any Python 3.11 venv.

Those bindings are packaged only for the system interpreter; they are ABI-compatible with any
CPython 3.11, so the service's own venv can load them from the system's dist-packages.
"""

from __future__ import annotations

import importlib
import os
import sys
from types import ModuleType

SYSTEM_DIST = "/usr/lib/python3/dist-packages"


def import_system(name: str, package: str) -> ModuleType:
    """``import name``, falling back to Debian's dist-packages; ``package`` names the apt package."""
    try:
        return importlib.import_module(name)
    except ImportError:
        pass
    if not os.path.isdir(SYSTEM_DIST):
        raise ImportError(f"Python module '{name}' is missing: apt-get install {package}")
    sys.path.append(SYSTEM_DIST)
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ImportError(f"Python module '{name}' is missing or broken: apt-get install {package} ({exc})") from exc
    finally:
        sys.path.remove(SYSTEM_DIST)
