"""Where exceptions raised by activity code become Temporal ``ApplicationError``s.

Retryability comes from the ``core.errors`` class; this module only applies it.
"""

from __future__ import annotations

from temporalio.exceptions import ApplicationError

from core.errors import SternaError


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
