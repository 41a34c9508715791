"""Input limits shared by the API and the activities."""

from __future__ import annotations

from typing import Any

import pytest

from activities.failures import to_application_error
from core.errors import InvalidInput
from core.limits import MIN_BANDWIDTH_LIMIT, bandwidth_limit, replication_limit


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


@pytest.mark.parametrize(("source", "destination", "pace"), [
    ({}, {}, None),
    ({"bandwidth_limit": 8 * MIN_BANDWIDTH_LIMIT}, {}, 8 * MIN_BANDWIDTH_LIMIT),
    ({}, {"bandwidth_limit": 2 * MIN_BANDWIDTH_LIMIT}, 2 * MIN_BANDWIDTH_LIMIT),
    ({"bandwidth_limit": 8 * MIN_BANDWIDTH_LIMIT}, {"bandwidth_limit": 2 * MIN_BANDWIDTH_LIMIT},
     2 * MIN_BANDWIDTH_LIMIT),
    ({"bandwidth_limit": MIN_BANDWIDTH_LIMIT}, {"bandwidth_limit": None}, MIN_BANDWIDTH_LIMIT),
])
def test_a_replication_runs_at_the_stricter_of_both_sides_limits(source: dict[str, Any], destination: dict[str, Any],
                                                                  pace: int | None) -> None:
    # One pass reads the source and writes the destination's replica: either side's link may be the one to spare.
    assert replication_limit(source, destination) == pace


def test_a_bad_destination_limit_fails_a_replication_by_its_name() -> None:
    with pytest.raises(InvalidInput, match=r"destination_environment\.bandwidth_limit"):
        replication_limit({}, {"bandwidth_limit": 1})
