"""The one place where botocore failures become ``core.errors``.

AWS error codes are stable strings, so the mapping is by code (and by exception class
for failures that never reached AWS). Messages keep AWS' own explanation, which never
contains the secret key, but every message still goes through ``redact`` because some
AWS-compatible clouds echo request details back.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    ParamValidationError,
    PartialCredentialsError,
    ReadTimeoutError,
    SSLError,
)

from core.errors import (
    AuthenticationFailed,
    ConnectionFailed,
    InvalidInput,
    NotFound,
    ProviderError,
    ProviderTransient,
    SternaError,
)

#: values that must be scrubbed from messages
Secrets = tuple[str | None, ...]

AUTH_CODES = frozenset(
    {
        "AuthFailure",
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "SignatureDoesNotMatch",
        "InvalidAccessKeyId",
        "ExpiredToken",
        "ExpiredTokenException",
        "RequestExpired",
        "InvalidToken",
        "AccessDenied",
        "AccessDeniedException",
        "UnauthorizedOperation",
        "OptInRequired",
    }
)
TRANSIENT_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
        "RequestThrottledException",
        "InternalError",
        "InternalServerException",
        "InternalFailure",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "Unavailable",
        "InsufficientInstanceCapacity",
        "ConcurrentLimitExceededException",
    }
)
INVALID_CODES = frozenset(
    {
        "InvalidParameterValue",
        "InvalidParameterCombination",
        "InvalidParameter",
        "MissingParameter",
        "ValidationException",
        "ValidationError",
        "Unsupported",
        "UnsupportedOperation",
        "InvalidBlockDeviceMapping",
        "VolumeTypeNotAvailableInZone",
        "InvalidAMIName.Duplicate",
    }
)


def redact(text: str, secrets: Iterable[str | None]) -> str:
    """Replace every occurrence of a secret value in ``text``."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def translate(exc: BaseException, action: str, secrets: Iterable[str | None] = ()) -> SternaError:
    """The ``core.errors`` exception for a botocore failure during ``action``."""
    secrets = list(secrets)
    if isinstance(exc, SternaError):
        return exc
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code") or "Unknown")
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        detail = redact(str(error.get("Message") or "no message"), secrets)
        text = f"{action} failed: {code}: {detail}"
        if code in AUTH_CODES:
            if code in {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation"}:
                return AuthenticationFailed(
                    f"{action} failed: the credentials are not allowed to do this ({code})"
                )
            return AuthenticationFailed(f"{action} failed: AWS rejected the credentials ({code}: {detail})")
        if code.endswith(".NotFound") or code.endswith("NotFound") or code == "ResourceNotFoundException":
            return NotFound(text)
        if code in INVALID_CODES or code.endswith(".Malformed") or code.startswith("Invalid"):
            return InvalidInput(text)
        if code in TRANSIENT_CODES or status >= 500:
            return ProviderTransient(text)
        return ProviderError(text)
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return AuthenticationFailed(f"{action} failed: no usable AWS credentials ({type(exc).__name__})")
    if isinstance(exc, NoRegionError):
        return InvalidInput(f"{action} failed: no region configured")
    if isinstance(exc, ParamValidationError):
        return InvalidInput(redact(f"{action} failed: {exc}", secrets))
    if isinstance(exc, EndpointConnectionError | ConnectTimeoutError | ReadTimeoutError | SSLError):
        return ConnectionFailed(redact(f"{action} failed: cannot reach AWS: {exc}", secrets))
    if isinstance(exc, ConnectionClosedError):
        return ConnectionFailed(redact(f"{action} failed: connection closed: {exc}", secrets))
    if isinstance(exc, BotoCoreError):
        # e.g. ResponseParserError when an AWS-compatible cloud answers a call it lacks
        return ProviderError(redact(f"{action} failed: {type(exc).__name__}: {exc}", secrets)[:500])
    return ProviderError(redact(f"{action} failed: {type(exc).__name__}: {exc}", secrets)[:500])


@contextmanager
def aws_errors(action: str, secrets: Iterable[str | None] = ()) -> Iterator[None]:
    """Run a block of AWS calls, re-raising failures as ``core.errors`` named by ``action``.

    The botocore exception is not chained (``from None``): its text is already in the
    message, and a chained traceback is where request details could leak into logs.
    """
    try:
        yield
    except (ClientError, BotoCoreError) as exc:
        raise translate(exc, action, secrets) from None


def error_code(exc: BaseException) -> str:
    """The AWS error code of a ``ClientError`` (empty for anything else)."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code") or "")
    return ""
