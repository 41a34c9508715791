"""What a guest's serial console says about its boot, for any guest: stages, userspace, terminal failures.

Only generic markers count: firmware (SeaBIOS, OVMF), boot loaders (GRUB, Windows Boot Manager), the
Linux kernel, initramfs-tools and dracut, systemd, getty, sysvinit, cloud-init, and Windows' Special
Administration Console (SAC). Nothing here knows Sterna's own test guest: a check that only recognises
our guest verifies nothing.

``ConsoleWatch`` is fed the console text as it grows (a QEMU serial file, EC2 GetConsoleOutput, GCE
serial port output, Azure boot diagnostics, an OpenStack console log) and remembers *when* each stage
was first seen, from the caller's clock, so boot times are those of the stages, not of the check's end.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

#: stages in boot order, each with the lines that show it was reached
STAGES: tuple[tuple[str, tuple[re.Pattern[str], ...]], ...] = (
    ("firmware", (re.compile(r"SeaBIOS \(version"), re.compile(r"BdsDxe: (loading|starting)"),
                  re.compile(r"Booting from (Hard Disk|DVD|Floppy)"))),
    ("bootloader", (re.compile(r"GNU GRUB"), re.compile(r"Booting `"), re.compile(r"Loading Linux \S+"),
                    re.compile(r"Windows Boot Manager"), re.compile(r"Windows is loading"))),
    ("kernel", (re.compile(r"Linux version \d"), re.compile(r"SAC started and initialized"))),
    ("initramfs", (re.compile(r"Run /init as init process"), re.compile(r"Loading, please wait"),
                   re.compile(r"Begin: Loading essential drivers"), re.compile(r"dracut-\S+ \(.*\) starting|"
                                                                                r"Starting dracut"))),
    ("root mounted", (re.compile(r"EXT4-fs \(\S+\): mounted filesystem"), re.compile(r"XFS \(\S+\): Ending clean"),
                      re.compile(r"BTRFS info \(device \S+\): (use|enabling|disk space)"),
                      re.compile(r"Run /sbin/init as init process"), re.compile(r"Switching root"),
                      re.compile(r"Welcome to (?!.*Initramfs).*!"), re.compile(r"INIT: version \S+ booting"))),
    ("userspace", (
        # systemd: the targets a booted system reaches, then getty's prompt
        re.compile(r"Reached target .*(Multi-User System|Graphical Interface|Login Prompts|Cloud-init target)"),
        re.compile(r"\blogin:\s*$"),
        # sysvinit after its rc scripts
        re.compile(r"INIT: Entering runlevel: [2-5]"),
        re.compile(r"Cloud-init v\. \S+ finished"),
        # Windows: SAC's command channel exists once the session manager and services run
        re.compile(r"EVENT: The CMD command is now available"),
    )),
)
STAGE_NAMES = tuple(name for name, _ in STAGES)

#: initramfs's first word on a missing root; the line that names the device follows (``FOLLOWED_WITHIN``)
GAVE_UP = re.compile(r"Gave up waiting for root (file system )?device")
#: the one terminal state that says nothing of the disk (see its pattern)
HOST_TOO_SLOW = "host too slow for the guest's timer check"
#: states a boot never leaves by itself: seeing one ends the check at once
TERMINAL_PATTERNS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("root device missing", re.compile(r"ALERT!\s+\S.*")),
    ("root device missing", GAVE_UP),
    # The kernel's timer check failing is the host's doing, not the disk's: an emulated CPU starved
    # of time (TCG on a loaded host) misses the ticks it counts. ``boot_verdict`` allows another try.
    (HOST_TOO_SLOW, re.compile(r"IO-APIC \+ timer doesn't work")),
    ("kernel panic", re.compile(r"Kernel panic - not syncing")),
    ("emergency mode", re.compile(r"You are in emergency mode|Entering emergency mode")),
    ("GRUB rescue shell", re.compile(r"grub rescue>")),
    ("no bootable device", re.compile(r"No bootable device|Boot failed: not a bootable disk")),
    ("Windows stop error", re.compile(r"INACCESSIBLE_BOOT_DEVICE|STOP: 0x0000007[BbEe]")),
)
#: terminal lines that a more telling one follows within moments: initramfs prints "Gave up waiting for
#: root" and its help text, then "ALERT! /dev/sda2 does not exist", which names the device. On a loaded
#: host the two arrive in different reads, so the check waits this long for the second.
FOLLOWED_WITHIN: dict[int, float] = {TERMINAL_PATTERNS.index(("root device missing", GAVE_UP)): 15.0}

_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][0-9A-Za-z]|\r")


@dataclass
class ConsoleState:
    """What the console showed so far: the first line and time of each stage, and a terminal failure."""

    stages: dict[str, tuple[float, str]] = field(default_factory=dict)
    failure: tuple[str, str] | None = None  # (kind, line)
    failure_at: float | None = None

    @property
    def userspace_started(self) -> bool:
        return "userspace" in self.stages

    @property
    def last_stage(self) -> str | None:
        reached = [name for name in STAGE_NAMES if name in self.stages]
        return reached[-1] if reached else None


class ConsoleWatch:
    """Feed console text as it arrives; ``state`` says which stages were seen and when."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.state = ConsoleState()
        self._clock = clock
        self._partial = ""
        self._failure_rank = len(TERMINAL_PATTERNS)

    def feed(self, text: str) -> list[str]:
        """Take more console text; returns the stages newly reached (in boot order)."""
        now = self._clock()
        lines = (self._partial + text).split("\n")
        # A prompt ("login: ", "grub rescue> ") has no newline after it: judge the unfinished line too,
        # but keep it to be completed by the next chunk.
        self._partial = lines.pop()
        new: list[str] = []
        failures: list[tuple[int, str, str]] = []
        for raw in [*lines, self._partial]:
            line = _ANSI.sub("", raw).strip()
            if not line:
                continue
            for name, patterns in STAGES:
                if name not in self.state.stages and any(p.search(line) for p in patterns):
                    self.state.stages[name] = (now, line)
                    new.append(name)
            failures += [(rank, kind, line) for rank, (kind, p) in enumerate(TERMINAL_PATTERNS) if p.search(line)]
        if failures and min(failures)[0] < self._failure_rank:
            # The most telling line read so far (FOLLOWED_WITHIN); the failure dates from the first.
            self._failure_rank, kind, line = min(failures)
            self.state.failure = (kind, line)
            self.state.failure_at = now if self.state.failure_at is None else self.state.failure_at
        return new

    def failure_final(self, now: float) -> bool:
        """Whether a terminal failure was seen and no more telling line can still follow it."""
        at = self.state.failure_at
        if self.state.failure is None or at is None:
            return False
        return now - at >= FOLLOWED_WITHIN.get(self._failure_rank, 0.0)


def scan_console(text: str) -> ConsoleState:
    """Judge a whole console text at once (cloud console-output APIs return it that way)."""
    watch = ConsoleWatch(clock=lambda: 0.0)
    watch.feed(text)
    return watch.state
