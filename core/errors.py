"""The one error tree of Sterna.

    SternaError                       base; ``code`` is a stable machine-readable type name
    ├── InvalidInput                  bad user input (API 400, activity: non-retryable)
    ├── NotFound                      unknown id or instance (API 404, non-retryable)
    ├── Conflict                      wrong state for the request (API 409, non-retryable)
    ├── ProviderError                 a cloud/provider call failed
    │   ├── ConnectionFailed          endpoint unreachable, TLS, DNS (retryable)
    │   ├── AuthenticationFailed      bad credentials (non-retryable)
    │   └── ProviderTransient         throttling, 5xx (retryable)
    └── TransferError                 disk data problems
        └── IntegrityError            a digest did not match (retryable: re-copy)

Activities raise these; ``to_application_error`` is the single place where they become
Temporal ``ApplicationError``s, so retry behaviour is decided here and nowhere else.
"""

from __future__ import annotations

from temporalio.exceptions import ApplicationError


class SternaError(Exception):
    """Base error. ``retryable`` tells Temporal whether another attempt can help."""

    code = "SternaError"
    retryable = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(SternaError):
    code = "InvalidInput"


class NotFound(SternaError):
    code = "NotFound"


class Conflict(SternaError):
    code = "Conflict"


class ProviderError(SternaError):
    code = "ProviderError"
    retryable = True


class ConnectionFailed(ProviderError):
    code = "ConnectionFailed"
    retryable = True


class AuthenticationFailed(ProviderError):
    code = "AuthenticationFailed"
    retryable = False


class ProviderTransient(ProviderError):
    code = "ProviderTransient"
    retryable = True


class TransferError(SternaError):
    code = "TransferError"
    retryable = True


class IntegrityError(TransferError):
    code = "IntegrityError"
    retryable = True


NON_RETRYABLE_TYPES = [InvalidInput.code, NotFound.code, Conflict.code, AuthenticationFailed.code]


def to_application_error(exc: BaseException) -> ApplicationError:
    """Map any exception raised by activity code to an ``ApplicationError``.

    Unknown exceptions stay retryable (a bug or a transient OS error) but keep their
    class name, so the task error shown to users says what actually went wrong.
    """
    if isinstance(exc, ApplicationError):
        return exc
    if isinstance(exc, SternaError):
        return ApplicationError(exc.message, type=exc.code, non_retryable=not exc.retryable)
    return ApplicationError(f"{type(exc).__name__}: {exc}", type=type(exc).__name__)
