"""``connection_info`` → service-account credentials, Compute and Storage clients, and the one
mapping of Google errors onto ``core.errors``.

The key's ``private_key`` never leaves this module in a message: every error text goes through
``redact`` with the key's secret fields, since Google's auth library quotes token responses.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from core.errors import (
    AuthenticationFailed,
    ConnectionFailed,
    InvalidInput,
    NotFound,
    ProviderError,
    ProviderTransient,
    SternaError,
)

CONNECTION_INFO_SCHEMA: dict[str, Any] = {
    "$schema": "http://cloudbase.it/coriolis/schemas/gcp_connection#",
    "type": "object",
    "properties": {
        "project_id": {"type": "string", "description": "default: the key's project_id"},
        "service_account": {
            "description": "the service-account key file (JSON object, or the file's text)",
            "oneOf": [{"type": "object"}, {"type": "string"}],
        },
        "zone": {"type": "string", "description": "default zone for instances", "default": "us-central1-a"},
        "bucket": {"type": "string", "description": "GCS bucket where disk tarballs are staged for import"},
        "compute_endpoint": {"type": "string", "description": "Compute API root (tests, Private Service Connect)"},
        "storage_endpoint": {"type": "string", "description": "Cloud Storage API root"},
        "cloudbuild_endpoint": {"type": "string", "description": "Cloud Build API root (image export, as a source)"},
    },
    "required": ["service_account"],
}

_KEY_FIELDS = ("type", "private_key", "client_email", "token_uri")


def redact(text: str, secrets: tuple[str, ...]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
            for line in secret.splitlines():
                if len(line) > 16:
                    text = text.replace(line, "***")
    return text


@dataclass
class GcpConnection:
    project: str
    zone: str
    bucket: str | None
    info: dict[str, Any]
    compute_endpoint: str | None
    storage_endpoint: str | None
    secrets: tuple[str, ...]
    cloudbuild_endpoint: str = "https://cloudbuild.googleapis.com"
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _credentials: Any = None
    _clients: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_info(cls, info: Mapping[str, Any]) -> GcpConnection:
        key = info.get("service_account")
        if isinstance(key, str):
            try:
                key = json.loads(key)
            except ValueError:
                raise InvalidInput("connection_info.service_account is not a JSON key file") from None
        if not isinstance(key, dict):
            raise InvalidInput("connection_info.service_account (the service-account key JSON) is required")
        missing = [f for f in _KEY_FIELDS if not key.get(f)]
        if missing or key.get("type") != "service_account":
            raise InvalidInput("connection_info.service_account is not a service-account key "
                               f"(missing or wrong: {', '.join(missing) or 'type'})")
        project = str(info.get("project_id") or key.get("project_id") or "")
        if not project:
            raise InvalidInput("connection_info.project_id is required (the key names no project)")
        secrets = (str(key["private_key"]), str(key.get("private_key_id") or ""))
        return cls(project=project, zone=str(info.get("zone") or "us-central1-a"), bucket=info.get("bucket"),
                   info=dict(key), compute_endpoint=info.get("compute_endpoint"),
                   storage_endpoint=info.get("storage_endpoint"), secrets=secrets,
                   cloudbuild_endpoint=str(info.get("cloudbuild_endpoint") or cls.cloudbuild_endpoint))

    @property
    def credentials(self) -> Any:
        from google.oauth2 import service_account

        with self._lock:
            if self._credentials is None:
                with gcp_errors("reading the service-account key", self.secrets):
                    self._credentials = service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
                        self.info, scopes=["https://www.googleapis.com/auth/cloud-platform"]
                    )
            return self._credentials

    def compute(self, name: str) -> Any:
        """A ``google.cloud.compute_v1`` client by class name (``"ImagesClient"``...), over REST."""
        from google.api_core.client_options import ClientOptions
        from google.cloud import compute_v1

        with self._lock:
            client = self._clients.get(name)
        if client is None:
            options = ClientOptions(api_endpoint=self.compute_endpoint) if self.compute_endpoint else None
            client = getattr(compute_v1, name)(credentials=self.credentials, client_options=options,
                                               transport="rest")
            with self._lock:
                self._clients[name] = client
        return client

    def storage(self) -> Any:
        from google.cloud import storage  # type: ignore[attr-defined]

        with self._lock:
            client = self._clients.get("storage")
        if client is None:
            options = {"api_endpoint": self.storage_endpoint} if self.storage_endpoint else None
            client = storage.Client(project=self.project, credentials=self.credentials, client_options=options)
            with self._lock:
                self._clients["storage"] = client
        return client

    def authorized_session(self) -> Any:
        from google.auth.transport.requests import AuthorizedSession

        return AuthorizedSession(self.credentials)  # type: ignore[no-untyped-call]

    def wait(self, op: Any, doing: str, timeout: float = 3600) -> None:
        """Poll a zone or global operation with its ``wait`` method, as GCE recommends; raise its error."""
        from google.cloud import compute_v1

        deadline = time.monotonic() + timeout
        zone = op.zone.rsplit("/", 1)[-1] if op.zone else None
        with gcp_errors(doing, self.secrets):
            while op.status != compute_v1.Operation.Status.DONE:
                if time.monotonic() > deadline:
                    raise ProviderTransient(f"{doing}: operation {op.name} not done after {timeout:.0f} s")
                if zone:
                    op = self.compute("ZoneOperationsClient").wait(project=self.project, zone=zone,
                                                                 operation=op.name)
                else:
                    op = self.compute("GlobalOperationsClient").wait(project=self.project, operation=op.name)
        if op.error and op.error.errors:
            raise operation_error(doing, op.error.errors, self.secrets)


def operation_error(doing: str, errors: Any, secrets: tuple[str, ...]) -> SternaError:
    codes = [e.code for e in errors]
    text = redact("; ".join(f"{e.code}: {e.message}" for e in errors), secrets)
    message = f"{doing} failed: {text}"
    if any("QUOTA" in c for c in codes):
        return InvalidInput(f"{message} (raise the quota or pick a smaller machine type)")
    if any(c in ("RESOURCE_NOT_FOUND", "NOT_FOUND", "notFound") for c in codes):
        return NotFound(message)
    if any(c.startswith("ZONE_RESOURCE_POOL_EXHAUSTED") or c == "INTERNAL_ERROR" for c in codes):
        return ProviderTransient(message)
    return InvalidInput(message)


@contextmanager
def gcp_errors(doing: str, secrets: tuple[str, ...]) -> Iterator[None]:
    """Google auth and API failures as ``core.errors``, naming what was being done, with no secret."""
    from google.api_core import exceptions as gexc
    from google.auth import exceptions as aexc

    try:
        yield
    except SternaError:
        raise
    except aexc.RefreshError as e:
        # The token endpoint refused the key: a wrong or revoked key, or a deleted account.
        raise AuthenticationFailed(
            f"{doing}: Google refused the service-account key ({redact(str(e.args[0] if e.args else e), secrets)})"
        ) from None
    except aexc.TransportError as e:
        raise ConnectionFailed(f"{doing}: cannot reach Google's token endpoint ({redact(str(e), secrets)})") from None
    except (aexc.MalformedError, ValueError) as e:
        raise InvalidInput(f"{doing}: the service-account key is malformed ({redact(str(e), secrets)})") from None
    except gexc.Unauthorized as e:
        raise AuthenticationFailed(
            f"{doing}: Google refused the service-account key ({redact(e.message, secrets)})") from None
    except gexc.Forbidden as e:
        reasons = {err.get("reason") for err in (e.errors or []) if isinstance(err, dict)}
        if "QUOTA_EXCEEDED" in reasons or "quotaExceeded" in reasons or "rateLimitExceeded" in reasons:
            raise ProviderTransient(f"{doing}: {redact(e.message, secrets)}") from None
        raise AuthenticationFailed(f"{doing}: permission denied: {redact(e.message, secrets)}") from None
    except gexc.NotFound as e:
        raise NotFound(f"{doing}: {redact(e.message, secrets)}") from None
    except (gexc.BadRequest, gexc.Conflict) as e:
        raise InvalidInput(f"{doing}: {redact(e.message, secrets)}") from None
    except (gexc.TooManyRequests, gexc.ServerError) as e:
        raise ProviderTransient(f"{doing}: {redact(e.message, secrets)}") from None
    except gexc.GoogleAPICallError as e:
        raise ProviderError(f"{doing}: {redact(e.message, secrets)}") from None
    except OSError as e:
        raise ConnectionFailed(f"{doing}: {redact(str(e), secrets)}") from None
