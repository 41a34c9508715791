"""The one error tree of Sterna.

    SternaError                       base; ``code`` is a stable machine-readable type name
    ├── InvalidInput                  bad user input (API 400, activity: non-retryable)
    ├── NotFound                      unknown id or instance (API 404, non-retryable)
    ├── Conflict                      wrong state for the request (API 409, non-retryable)
    │   ├── InvalidState              the resource's state refuses it: busy, not final (API 400, as Coriolis)
    │   └── InUse                     still used by others, e.g. an endpoint (API 403, as Coriolis)
    ├── ProviderError                 a cloud/provider call failed
    │   ├── ConnectionFailed          endpoint unreachable, TLS, DNS (retryable)
    │   ├── AuthenticationFailed      bad credentials (API 400, non-retryable)
    │   ├── ProviderTransient         throttling, 5xx (retryable)
    │   ├── BootFailed                the guest showed a state it never leaves (non-retryable)
    │   └── BootInconclusive          no boot verdict in time (retryable; the caller allows one retry)
    └── TransferError                 disk data problems
        └── IntegrityError            a digest did not match (retryable: re-copy)

Each class says its HTTP status and whether another attempt can help; the workflows' retry
policies and the API's status maps are derived from these attributes and nowhere else.
``activities.failures.to_application_error`` turns them into Temporal ``ApplicationError``s.

Workflows import this module inside the sandbox, so it stays stdlib-only
(``tests/core/test_errors.py`` checks that).
"""

from __future__ import annotations

from typing import ClassVar


class SternaError(Exception):
    """Base error. ``retryable`` tells Temporal whether another attempt can help."""

    #: the ``ApplicationError`` type on the wire: existing histories carry it, never rename one
    code: ClassVar[str] = "SternaError"
    retryable: ClassVar[bool] = False
    #: the status the API answers with when this error reaches a request
    http_status: ClassVar[int] = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(SternaError):
    code = "InvalidInput"
    http_status = 400


class NotFound(SternaError):
    code = "NotFound"
    http_status = 404


class Conflict(SternaError):
    code = "Conflict"
    http_status = 409


class InvalidState(Conflict):
    """Coriolis's ``Invalid*State`` (400): an execution while another runs, deleting an active action."""

    code = "InvalidState"
    http_status = 400


class InUse(Conflict):
    """Coriolis answers a delete that would orphan others with 403 ("N transfers would be orphaned!")."""

    code = "InUse"
    http_status = 403


class ProviderError(SternaError):
    code = "ProviderError"
    retryable = True


class ConnectionFailed(ProviderError):
    code = "ConnectionFailed"
    retryable = True


class AuthenticationFailed(ProviderError):
    code = "AuthenticationFailed"
    retryable = False
    http_status = 400


class ProviderTransient(ProviderError):
    code = "ProviderTransient"
    retryable = True


# The two Boot* errors stay out of ``_BY_CODE`` below: the workflows' retry policies keep the list they
# always had, and ``ApplicationError.non_retryable`` (set from ``retryable``) carries the decision.
class BootFailed(ProviderError):
    """A boot check saw a terminal state (initramfs ALERT!, kernel panic...): the same disk fails again."""

    code = "BootFailed"
    retryable = False


class BootInconclusive(ProviderError):
    """A boot check reached no verdict (timeout, QEMU gone): one more attempt may help, more will not."""

    code = "BootInconclusive"
    retryable = True


class TransferError(SternaError):
    code = "TransferError"
    retryable = True


class IntegrityError(TransferError):
    code = "IntegrityError"
    retryable = True


#: the tree above by code, in definition order. Subclasses elsewhere (``osmorphing.errors``...)
#: set ``retryable`` themselves and are not listed: the lists below must not depend on
#: which modules a process happened to import.
_BY_CODE: dict[str, type[SternaError]] = {cls.code: cls for cls in (
    InvalidInput, NotFound, Conflict, ProviderError, ConnectionFailed, AuthenticationFailed, ProviderTransient,
    TransferError, IntegrityError,
)}


def error_class(code: str | None) -> type[SternaError] | None:
    """The error class whose ``code`` is ``code`` (an ``ApplicationError.type``), if any."""
    return _BY_CODE.get(code or "")


def non_retryable_types(*also: type[SternaError]) -> list[str]:
    """``RetryPolicy.non_retryable_error_types``: every non-retryable code of the tree, plus ``also``.

    ``also`` names retryable errors that one caller chooses not to retry (a quick answer
    to a user beats a retry loop). The order is the definition order, so policies are stable.
    """
    extra = {cls.code for cls in also}
    return [code for code, cls in _BY_CODE.items() if not cls.retryable or code in extra]


NON_RETRYABLE_TYPES = non_retryable_types()
