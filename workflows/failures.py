"""What actually went wrong, under Temporal's ``ActivityError`` wrapping."""

from __future__ import annotations

from temporalio.exceptions import ActivityError, ApplicationError


def root_cause(err: BaseException) -> BaseException:
    """The error an activity raised (an ``ApplicationError``, a timeout...), not its ``ActivityError`` wrappers."""
    cause = err
    while isinstance(cause, ActivityError) and cause.cause is not None:
        cause = cause.cause
    return cause


def failure_message(err: BaseException) -> str:
    """The message a user should read in a task's error."""
    cause = root_cause(err)
    return cause.message if isinstance(cause, ApplicationError) else str(cause)
