"""Recording every change made to a guest, so each one becomes an auditable task event."""

from __future__ import annotations

import posixpath
from collections.abc import Callable

from osmorphing.errors import GuestCommandError
from osmorphing.guest import Guest
from osmorphing.models import Change, ChangeAction

BACKUP_ROOT = "/var/lib/sterna/backup"
#: what starts a warning among the morph's events, so that the step records it at WARNING level
WARNING_PREFIX = "warning: "


class GuestEditor:
    """Applies changes to a ``Guest`` and records each as a ``Change`` (and an ``on_event`` line)."""

    def __init__(self, guest: Guest, on_event: Callable[[str], None] | None = None) -> None:
        self.guest = guest
        self.changes: list[Change] = []
        self.warnings: list[str] = []
        self._on_event = on_event

    def event(self, line: str) -> None:
        if self._on_event:
            self._on_event(line)

    def _record(self, path: str, action: ChangeAction, detail: str) -> None:
        change = Change(path=path, action=action, detail=detail)
        self.changes.append(change)
        self.event(change.line())

    def record(self, path: str, action: ChangeAction, detail: str) -> None:
        """Record a change made through another channel (a registry hive edited with hivex)."""
        self._record(path, action, detail)

    def write_binary(self, path: str, data: bytes, detail: str) -> None:
        """Create or replace a binary file (a driver, an MSI) and record it."""
        existed = self.guest.is_file(path)
        self.guest.mkdir_p(posixpath.dirname(path))
        self.guest.write_bytes(path, data)
        self._record(path, "modified" if existed else "created", detail)

    def warn(self, message: str) -> None:
        self.warnings.append(message)
        self.event(f"{WARNING_PREFIX}{message}")

    def write(self, path: str, content: str, detail: str, mode: int = 0o644) -> bool:
        """Create or replace ``path``; no change (and no event) when the content is already identical."""
        existed = self.guest.is_file(path)
        if existed and self.guest.read_text(path) == content:
            return False
        self.guest.mkdir_p(posixpath.dirname(path))
        self.guest.write_text(path, content, mode)
        self._record(path, "modified" if existed else "created", detail)
        return True

    def delete(self, path: str, detail: str) -> None:
        self.guest.remove(path)
        self._record(path, "deleted", detail)

    def backup(self, path: str) -> str:
        """Copy ``path`` under ``/var/lib/sterna/backup`` (same relative path); return the copy's path.

        The first backup wins, so running morphing twice keeps the source platform's original.
        """
        dest = BACKUP_ROOT + path
        if self.guest.exists(dest):
            return dest  # an earlier run already saved the true original; never overwrite it
        self.guest.mkdir_p(posixpath.dirname(dest))
        self.guest.write_bytes(dest, self.guest.read_bytes(path), 0o600)
        self._record(dest, "created", f"backup of the original {path}")
        return dest

    def retire(self, path: str, why: str) -> None:
        """Back up, then delete, a configuration file that no longer applies on the target."""
        dest = self.backup(path)
        self.delete(path, f"{why} (original kept at {dest})")

    def symlink(self, target: str, link: str, detail: str) -> None:
        if self.guest.is_symlink(link) and self.guest.readlink(link) == target:
            return
        self.guest.symlink(target, link)
        self._record(link, "created", f"symlink to {target}: {detail}")

    def run(self, argv: list[str], detail: str, *, check: bool = True) -> str | None:
        """Run ``argv`` in the guest (recorded, not run, on directory trees). ``None`` when it failed."""
        try:
            output = self.guest.run(argv)
        except GuestCommandError as exc:
            if check:
                raise
            self.warn(f"{' '.join(argv)} failed: {exc.output.strip()[-300:]}")
            return None
        suffix = "" if self.guest.executes_commands else " [recorded; not executed on a directory tree]"
        self._record(" ".join(argv), "command", detail + suffix)
        return output

    def run_user_script(self, payload: str, origin: str, phase: str, *, in_appliance: bool = False) -> None:
        """Run one user script (a Coriolis ``user_scripts`` entry) and record it with its output."""
        where = "in the appliance, guest not mounted" if in_appliance else "chrooted in the guest"
        try:
            output = (
                self.guest.run_appliance_script(payload) if in_appliance else self.guest.run_script(payload)
            )
        except GuestCommandError as exc:
            raise GuestCommandError(f"user script {origin} (phase {phase})", exc.output) from exc
        tail = output.strip().splitlines()[-3:]
        suffix = "" if self.guest.executes_commands else " [recorded; not executed on a directory tree]"
        self._record(
            f"user script {origin}",
            "command",
            f"phase {phase}, {where}" + (f"; output: {' | '.join(tail)}" if tail else "") + suffix,
        )
