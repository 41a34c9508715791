"""Coriolis ``user_scripts``: parsing, phases, and their record among the changes."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from osmorphing import DirectoryGuest, MorphOptions, morph_guest
from osmorphing.scripts import POST_MOUNT, PRE_MOUNT, scripts_for


def test_format_and_order() -> None:
    scripts = {
        "global": {"linux": "echo global", "windows": "Write-Host win"},
        "instances": {"vm1": [{"phase": PRE_MOUNT, "payload": "echo pre"}, {"payload": "echo post"}]},
    }
    assert scripts_for(scripts, "linux", "vm1") == [
        (POST_MOUNT, "echo global", "global.linux"),
        (PRE_MOUNT, "echo pre", "instances.vm1[0]"),
        (POST_MOUNT, "echo post", "instances.vm1[1]"),
    ]
    assert scripts_for(scripts, "linux", "other") == [(POST_MOUNT, "echo global", "global.linux")]
    assert scripts_for({"global": {"linux": None}}, "linux", None) == []


def test_bad_phase_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown phase 'later'"):
        scripts_for({"global": {"linux": [{"phase": "later", "payload": "x"}]}}, "linux", None)


def test_scripts_are_run_in_their_phase_and_recorded(make_guest: Callable[[str], DirectoryGuest]) -> None:
    guest = make_guest("debian")
    options = MorphOptions(
        instance_name="vm1",
        user_scripts={
            "global": {"linux": "touch /etc/from-global"},
            "instances": {"vm1": [{"phase": PRE_MOUNT, "payload": "lvs"}]},
        },
    )
    report = morph_guest(guest, target_platform="gcp", source_platform="vmware", options=options)
    assert guest.appliance_scripts == ["lvs"]
    assert guest.scripts == ["touch /etc/from-global"]
    scripts = [c for c in report.changes if c.path.startswith("user script")]
    assert [(c.path, c.action) for c in scripts] == [
        ("user script instances.vm1[0]", "command"),
        ("user script global.linux", "command"),
    ]
    assert scripts[0].detail.startswith(f"phase {PRE_MOUNT}, in the appliance")
    assert scripts[1].detail.startswith(f"phase {POST_MOUNT}, chrooted in the guest")
