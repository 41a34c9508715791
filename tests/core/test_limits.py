"""Input limits shared by the API and the activities."""

from __future__ import annotations

from typing import Any

import pytest

from activities.failures import to_application_error
from core.errors import InvalidInput
from core.limits import MIN_BANDWIDTH_LIMIT, bandwidth_limit


@pytest.mark.parametrize("value", [1, 0, -5, MIN_BANDWIDTH_LIMIT - 1, "fast", "8388608", 1.5e7, True, [1]])
def test_bad_bandwidth_limits_are_refused_and_never_retried(value: Any) -> None:
    # Reproducers 9 and 10: a limit of 1 stalled the host, a negative or non-numeric one retried forever.
    with pytest.raises(InvalidInput, match="bandwidth_limit") as raised:
        bandwidth_limit({"bandwidth_limit": value}, "source_environment")
    assert to_application_error(raised.value).non_retryable


@pytest.mark.parametrize(("env", "expected"), [
    ({}, None), ({"bandwidth_limit": None}, None), ({"bandwidth_limit": MIN_BANDWIDTH_LIMIT}, MIN_BANDWIDTH_LIMIT),
    ({"bandwidth_limit": 8 << 20}, 8 << 20),
])
def test_good_bandwidth_limits(env: dict[str, Any], expected: int | None) -> None:
    assert bandwidth_limit(env) == expected
