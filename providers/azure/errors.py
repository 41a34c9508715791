"""The one place where Azure SDK failures become ``core.errors``.

ARM errors carry a stable ``code`` (``AuthorizationFailed``, ``SubscriptionNotFound``,
``InvalidParameter``...) and the token authority an ``AADSTS`` number; the mapping is by those.
Every message goes through ``redact``, and the SDK exception is never chained, so neither
the secret nor request details reach task events or logs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from azure.core.exceptions import (
    AzureError,
    ClientAuthenticationError,
    HttpResponseError,
    ServiceRequestError,
    ServiceResponseError,
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

_AADSTS = re.compile(r"(AADSTS\d+)[:\s]+([^\r\n.]*)")
#: what the common AADSTS codes mean, in the words a user can act on
_AAD_HINTS = {
    "AADSTS7000215": "the client secret is wrong",
    "AADSTS7000222": "the client secret has expired",
    "AADSTS700016": "no application with this client id exists in the tenant",
    "AADSTS90002": "the tenant does not exist",
    "AADSTS700027": "the certificate is not registered for this application",
}
_QUOTA = re.compile(r"quota", re.I)


def redact(text: str, secrets: Iterable[str | None]) -> str:
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def translate(exc: BaseException, action: str, secrets: Iterable[str | None] = ()) -> SternaError:
    """The ``core.errors`` exception for an Azure SDK failure during ``action``."""
    secrets = list(secrets)
    if isinstance(exc, SternaError):
        return exc
    if isinstance(exc, ClientAuthenticationError) and getattr(exc, "error", None) is None:
        # From azure-identity: the token authority refused the service principal.
        text = redact(str(exc.message or exc), secrets)
        found = _AADSTS.search(text)
        if found:
            hint = _AAD_HINTS.get(found.group(1), found.group(2).strip())
            return AuthenticationFailed(f"{action} failed: Azure AD refused the service principal: {hint} "
                                        f"({found.group(1)})")
        return AuthenticationFailed(f"{action} failed: Azure AD refused the service principal: "
                                    f"{_first_line(text)[:300]}")
    if isinstance(exc, HttpResponseError):
        err = getattr(exc, "error", None)
        code = str(getattr(err, "code", None) or "")
        detail = redact(str(getattr(err, "message", None) or _first_line(str(exc.message or exc))), secrets)[:600]
        status = int(exc.status_code or 0)
        text = f"{action} failed: {code or status}: {detail}"
        if status == 401 or code in ("InvalidAuthenticationToken", "ExpiredAuthenticationToken"):
            return AuthenticationFailed(f"{action} failed: ARM rejected the token ({code or status})")
        if status == 403 or code in ("AuthorizationFailed", "LinkedAuthorizationFailed"):
            return AuthenticationFailed(
                f"{action} failed: the service principal has no role that allows this ({code}): {detail}")
        if code == "SubscriptionNotFound":
            return InvalidInput(f"{action} failed: the subscription does not exist or the principal can't see "
                                f"it ({code}): {detail}")
        if code == "ResourceGroupNotFound":
            return InvalidInput(f"{action} failed: {detail} ({code})")
        if _QUOTA.search(detail) and code in ("OperationNotAllowed", "QuotaExceeded"):
            return InvalidInput(f"{action} failed: a quota would be exceeded ({code}): {detail}")
        if status == 404 or code in ("ResourceNotFound", "NotFound"):
            return NotFound(text)
        if status == 429 or status >= 500:
            return ProviderTransient(text)
        if status in (400, 409) and code:
            return InvalidInput(text)
        return ProviderError(text)
    if isinstance(exc, ServiceRequestError | ServiceResponseError):
        return ConnectionFailed(redact(f"{action} failed: cannot reach Azure: {_first_line(str(exc))}", secrets)[:500])
    if isinstance(exc, AzureError):
        return ProviderError(redact(f"{action} failed: {type(exc).__name__}: {_first_line(str(exc))}", secrets)[:500])
    return ProviderError(redact(f"{action} failed: {type(exc).__name__}: {exc}", secrets)[:500])


@contextmanager
def azure_errors(action: str, secrets: Iterable[str | None] = ()) -> Iterator[None]:
    """Run Azure calls, re-raising failures as ``core.errors`` named by ``action`` (not chained)."""
    try:
        yield
    except AzureError as exc:
        raise translate(exc, action, secrets) from None


def error_code(exc: BaseException) -> str:
    return str(getattr(getattr(exc, "error", None), "code", None) or "")
