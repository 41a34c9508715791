"""Build hook: the native lane, ``diskio/_lane.c`` compiled into ``diskio/_lane.so`` (see ``diskio.native``).

Hatchling runs it for every wheel and editable install; ``python hatch_build.py`` runs the same compile
alone. Without a C compiler or ``xxhash.h`` (Debian's ``libxxhash-dev``) it warns and builds nothing,
and the engine moves those bytes in Python: the same results, more CPU (README, Performance).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

SOURCE = Path("diskio") / "_lane.c"
LIBRARY = Path("diskio") / "_lane.so"


def compile_lane(root: Path) -> str | None:
    """Compile the lane into ``root/diskio/_lane.so``; the reason it could not, or None."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return "no C compiler (cc)"
    out, partial = root / LIBRARY, root / LIBRARY.with_suffix(".so.partial")
    cmd = [*shlex.split(cc), "-O2", "-Wall", "-Wextra", "-shared", "-fPIC", "-o", str(partial), str(root / SOURCE),
           "-lxxhash"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return f"{shlex.join(cmd)} failed: {done.stderr.strip()[-500:]}"
    partial.replace(out)  # whole or not at all: a process loading it never sees half a library
    return None


try:
    from hatchling.builders.hooks.plugin.interface import BuildHookInterface
except ImportError:  # run as a script, outside a build
    pass
else:

    class NativeLaneHook(BuildHookInterface):  # type: ignore[type-arg]
        PLUGIN_NAME = "custom"

        def initialize(self, version: str, build_data: dict[str, Any]) -> None:
            failed = compile_lane(Path(self.root))
            if failed is not None:
                self.app.display_warning(f"the native lane is not built ({failed}): HTTP bytes move in Python")
                return
            build_data["artifacts"].append(str(LIBRARY))
            build_data["pure_python"] = False
            build_data["infer_tag"] = True


if __name__ == "__main__":
    reason = compile_lane(Path(__file__).resolve().parent)
    if reason is not None:
        sys.exit(f"the native lane is not built: {reason}")
