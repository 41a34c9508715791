"""Where the ``local`` provider may read and write.

Its paths come from users (``connection_info.path``) and from ``vm.json`` files, and the worker may
run as root. So an endpoint's directory must lie under a root the operator allowed
(``STERNA_LOCAL_ROOTS``, default ``<data dir>/inventories``), disk files must stay inside their VM's
folder, and Sterna's own data dir, key, record DB, scratch and replica store are out of reach whatever the
roots say.
Every check is on resolved paths: a symlink counts for where it points.
"""

from __future__ import annotations

import re
from pathlib import Path

from core.errors import InvalidInput
from core.settings import Settings, get_settings

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def _within(path: Path, parent: Path) -> bool:
    return path == parent or path.is_relative_to(parent)


def _protected(settings: Settings) -> list[Path]:
    paths = [settings.data_dir, settings.scratch, settings.replica_store, settings.data_dir / "secret.key"]
    if settings.db_url.startswith("sqlite:///"):
        paths.append(Path(settings.db_url.removeprefix("sqlite:///")))
    return [p.resolve() for p in paths]


def endpoint_root(path: str, settings: Settings | None = None) -> Path:
    """The resolved inventory directory of an endpoint, or ``InvalidInput`` if it is out of bounds."""
    settings = settings or get_settings()
    root = Path(path).resolve()
    allowed = [r.resolve() for r in settings.local_allowed_roots]
    if not any(_within(root, a) for a in allowed):
        raise InvalidInput(f"Local path {path} is not under an allowed root ({', '.join(map(str, allowed))}); "
                           "the operator sets them with STERNA_LOCAL_ROOTS")
    inventories = (settings.data_dir / "inventories").resolve()
    for own in _protected(settings):
        inside_own = _within(root, own) and not (own == settings.data_dir.resolve() and _within(root, inventories))
        if _within(own, root) or inside_own:
            raise InvalidInput(f"Local path {path} overlaps Sterna's own data ({own})")
    return root


def inside(folder: Path, name: str, what: str) -> Path:
    """``folder / name`` resolved, refused unless it stays strictly inside ``folder``."""
    resolved_folder = folder.resolve()
    path = (folder / name).resolve()
    if path == resolved_folder or not path.is_relative_to(resolved_folder):
        raise InvalidInput(f"{what} '{name}' lies outside {folder}")
    return path


def file_name(identifier: str) -> str:
    """An id from ``vm.json`` made safe as one file name: no separators, no leading dots, bounded."""
    name = _UNSAFE.sub("_", identifier).lstrip(".")[:128]
    return name or "disk"
