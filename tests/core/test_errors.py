"""``core.errors`` is the one place that says how an error is retried and answered over HTTP."""

from __future__ import annotations

import pytest
from temporalio.exceptions import ApplicationError

from activities.failures import to_application_error
from api.deps import _worker_failure_status
from core.errors import (
    NON_RETRYABLE_TYPES,
    AuthenticationFailed,
    Conflict,
    ConnectionFailed,
    IntegrityError,
    InUse,
    InvalidInput,
    InvalidState,
    NotFound,
    ProviderError,
    ProviderTransient,
    SternaError,
    TransferError,
    error_class,
    non_retryable_types,
)

ALL = [InvalidInput, NotFound, Conflict, ProviderError, ConnectionFailed, AuthenticationFailed,
       ProviderTransient, TransferError, IntegrityError]


def test_codes_are_the_wire_names() -> None:
    # Histories and API messages carry these strings: they must never change.
    assert [cls.code for cls in ALL] == [cls.__name__ for cls in ALL]
    assert all(error_class(cls.code) is cls for cls in ALL)
    assert error_class("KeyError") is None and error_class(None) is None


def test_retryability_and_statuses() -> None:
    assert {cls.code: (cls.retryable, cls.http_status) for cls in ALL} == {
        "InvalidInput": (False, 400), "NotFound": (False, 404), "Conflict": (False, 409),
        "ProviderError": (True, 500), "ConnectionFailed": (True, 500), "AuthenticationFailed": (False, 400),
        "ProviderTransient": (True, 500), "TransferError": (True, 500), "IntegrityError": (True, 500),
    }


def test_state_refusals_answer_as_coriolis_does() -> None:
    # Coriolis: Invalid*State -> 400, an endpoint delete that would orphan transfers -> 403 (NotAuthorized).
    # Both stay Conflicts for the code that catches "refused by state" (a scheduled run that finds its
    # transfer busy), and non-retryable.
    assert (InvalidState.http_status, InUse.http_status) == (400, 403)
    assert issubclass(InvalidState, Conflict) and issubclass(InUse, Conflict)
    assert not InvalidState.retryable and not InUse.retryable
    assert to_application_error(InvalidState("busy")).non_retryable


def test_non_retryable_lists() -> None:
    # The same list, in the same order, the workflows' retry policies always had.
    assert NON_RETRYABLE_TYPES == ["InvalidInput", "NotFound", "Conflict", "AuthenticationFailed"]
    assert non_retryable_types(ConnectionFailed) == [*NON_RETRYABLE_TYPES[:3], "ConnectionFailed",
                                                     "AuthenticationFailed"]


def test_lists_do_not_depend_on_imports() -> None:
    # Subclasses elsewhere (osmorphing, providers) keep their own retryability and status.
    from osmorphing.errors import MorphingError, UnsupportedOS
    from providers.vsphere.http import RangeNotSupported

    assert non_retryable_types() == NON_RETRYABLE_TYPES
    assert error_class(UnsupportedOS.code) is None
    assert (UnsupportedOS.http_status, UnsupportedOS.retryable) == (400, False)
    assert (MorphingError.http_status, RangeNotSupported.http_status, RangeNotSupported.retryable) == (500, 500, True)


@pytest.mark.parametrize("cls", ALL)
def test_to_application_error(cls: type[SternaError]) -> None:
    err = to_application_error(cls("boom"))
    assert (err.type, err.message, err.non_retryable) == (cls.code, "boom", not cls.retryable)


def test_unknown_exceptions_stay_retryable_and_named() -> None:
    err = to_application_error(KeyError("x"))
    assert err.type == "KeyError" and not err.non_retryable and "KeyError" in err.message
    same = ApplicationError("as is", type="Custom", non_retryable=True)
    assert to_application_error(same) is same


def test_worker_failures_map_to_http() -> None:
    assert [_worker_failure_status(c) for c in ("InvalidInput", "NotFound", "Conflict", "AuthenticationFailed")] \
        == [400, 404, 409, 400]
    # Anything else failed at the provider, behind the worker.
    assert {_worker_failure_status(c) for c in ("ConnectionFailed", "ProviderTransient", "KeyError", None)} == {502}

