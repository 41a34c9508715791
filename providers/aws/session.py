"""Credentials, region and boto3 clients built from ``connection_info``.

``connection_info`` holds either an access key pair (optionally with a session token) or
a role ARN to assume (with the key pair, or the host's default credential chain, as the
source identity), the region, and an optional ``endpoint_url`` for AWS-compatible clouds
and for tests. Assumed-role credentials refresh themselves, so transfers that outlive the
one-hour STS session keep working.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import boto3
import botocore.session
from botocore.config import Config
from botocore.credentials import (
    AssumeRoleCredentialFetcher,
    CredentialProvider,
    DeferredRefreshableCredentials,
)

from core.errors import InvalidInput, ProviderError, ProviderTransient, TransferError
from core.polling import poll_until

# Several connection_info spellings are in use (Coriolis' own, boto's, the CLI's).
_ALIASES: dict[str, tuple[str, ...]] = {
    "access_key_id": ("access_key_id", "aws_access_key_id", "access_key"),
    "secret_access_key": ("secret_access_key", "aws_secret_access_key", "secret_key"),
    "session_token": ("session_token", "aws_session_token"),
    "region": ("region", "region_name"),
}

CONNECTION_INFO_SCHEMA: dict[str, Any] = {
    "$schema": "http://cloudbase.it/coriolis/schemas/aws_connection_info#",
    "type": "object",
    "properties": {
        "region": {"type": "string", "description": "AWS region, e.g. eu-west-1"},
        "access_key_id": {"type": "string"},
        "secret_access_key": {"type": "string"},
        "session_token": {"type": "string"},
        "role_arn": {
            "type": "string",
            "description": "role to assume (with the keys or the host's identity)",
        },
        "external_id": {"type": "string"},
        "endpoint_url": {"type": "string", "description": "AWS-compatible endpoint (all services)"},
        "endpoint_urls": {
            "type": "object",
            "description": "per-service endpoints, e.g. {'ec2': ..., 'ebs': ..., 'sts': ...}",
            "additionalProperties": {"type": "string"},
        },
        "verify_ssl": {"type": ["boolean", "string"], "default": True},
    },
    "required": ["region"],
    "anyOf": [{"required": ["access_key_id", "secret_access_key"]}, {"required": ["role_arn"]}],
}


def _pick(info: Mapping[str, Any], key: str) -> Any:
    for name in _ALIASES.get(key, (key,)):
        if info.get(name) not in (None, ""):
            return info[name]
    return None


@dataclass(frozen=True)
class AwsConnection:
    """Parsed ``connection_info``. ``repr`` never shows the secrets."""

    region: str
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)
    session_token: str | None = field(default=None, repr=False)
    role_arn: str | None = None
    external_id: str | None = field(default=None, repr=False)
    endpoint_url: str | None = None
    endpoint_urls: Mapping[str, str] = field(default_factory=dict)
    verify_ssl: bool | str = True

    @classmethod
    def from_info(cls, info: Mapping[str, Any]) -> AwsConnection:
        """Validate the shape of ``connection_info``; raises ``InvalidInput`` naming what is missing."""
        region = _pick(info, "region")
        if not region or not isinstance(region, str):
            raise InvalidInput("AWS connection_info needs a 'region'")
        key, secret = _pick(info, "access_key_id"), _pick(info, "secret_access_key")
        if bool(key) != bool(secret):
            raise InvalidInput("AWS connection_info needs both 'access_key_id' and 'secret_access_key'")
        if not key and not info.get("role_arn"):
            raise InvalidInput("AWS connection_info needs 'access_key_id'/'secret_access_key' or 'role_arn'")
        return cls(
            region=region.strip(),
            access_key_id=key,
            secret_access_key=secret,
            session_token=_pick(info, "session_token"),
            role_arn=info.get("role_arn") or None,
            external_id=info.get("external_id") or None,
            endpoint_url=info.get("endpoint_url") or None,
            endpoint_urls=dict(info.get("endpoint_urls") or {}),
            verify_ssl=info.get("verify_ssl", True),
        )

    @property
    def secrets(self) -> tuple[str | None, ...]:
        """Values that must never appear in messages."""
        return (self.secret_access_key, self.session_token, self.external_id)

    def endpoint_for(self, service: str) -> str | None:
        return self.endpoint_urls.get(service) or self.endpoint_url


class _AssumedRole(CredentialProvider):  # type: ignore[misc]
    """Credential provider that assumes ``role_arn`` lazily and refreshes before expiry."""

    METHOD = "sterna-assume-role"
    CANONICAL_NAME = "sterna-assume-role"

    def __init__(self, fetcher: AssumeRoleCredentialFetcher) -> None:
        super().__init__()
        self._fetcher = fetcher

    def load(self) -> DeferredRefreshableCredentials:
        return DeferredRefreshableCredentials(
            refresh_using=self._fetcher.fetch_credentials, method=self.METHOD
        )


class AwsClients:
    """Thread-safe cache of boto3 clients for one connection and region.

    boto3 clients are thread-safe (sessions are not), so the disk copier's threads share them.
    """

    def __init__(
        self, conn: AwsConnection, region: str | None = None, *, _share: AwsClients | None = None
    ) -> None:
        self.conn = conn
        self.region = region or conn.region
        #: overrides every waiter's poll delay (tests against moto, where state changes at once)
        self.poll_delay: float | None = None
        self._lock = threading.Lock()
        self._clients: dict[str, Any] = {}
        # Siblings share one boto3 session: its loaded service models (seconds of JSON
        # parsing for EC2) and its assumed-role credentials.
        self._session: boto3.Session = _share._session if _share else self._make_session()
        self._siblings: dict[str, AwsClients] = _share._siblings if _share else {}
        self._siblings.setdefault(self.region, self)
        self._config = Config(
            retries={"mode": "standard", "max_attempts": 5},
            connect_timeout=15,
            read_timeout=120,
            max_pool_connections=16,
            user_agent_extra="sterna",
        )

    def _make_session(self) -> boto3.Session:
        conn = self.conn
        base = botocore.session.Session()
        if conn.access_key_id:
            base.set_credentials(conn.access_key_id, conn.secret_access_key, conn.session_token)
        if not conn.role_arn:
            return boto3.Session(botocore_session=base, region_name=self.region)
        source = base.get_credentials()
        if source is None:
            raise InvalidInput("no source credentials to assume 'role_arn' with")
        extra: dict[str, Any] = {"RoleSessionName": "sterna"}
        if conn.external_id:
            extra["ExternalId"] = conn.external_id
        creator = partial(
            base.create_client,
            region_name=self.region,
            endpoint_url=conn.endpoint_for("sts"),
            verify=conn.verify_ssl,
        )
        fetcher = AssumeRoleCredentialFetcher(creator, source, conn.role_arn, extra_args=extra)
        assumed = botocore.session.Session()
        assumed.get_component("credential_provider").insert_before("env", _AssumedRole(fetcher))
        return boto3.Session(botocore_session=assumed, region_name=self.region)

    def client(self, service: str) -> Any:
        """A boto3 client for ``service`` (``ec2``, ``ebs``, ``sts``) in this region."""
        with self._lock:
            if service not in self._clients:
                self._clients[service] = self._session.client(
                    service,
                    region_name=self.region,
                    endpoint_url=self.conn.endpoint_for(service),
                    verify=self.conn.verify_ssl,
                    config=self._config,
                )
            return self._clients[service]

    def in_region(self, region: str) -> AwsClients:
        """Clients for another region, sharing this one's session."""
        with self._lock:
            if region not in self._siblings:
                sibling = AwsClients(self.conn, region, _share=self)
                sibling.poll_delay = self.poll_delay
            return self._siblings[region]

    def wait(self, waiter: str, *, delay: float, timeout: float, **kwargs: Any) -> None:
        """Run an EC2 waiter for up to ``timeout`` seconds, polling every ``delay`` (or ``poll_delay``)."""
        step = self.poll_delay if self.poll_delay is not None else delay
        attempts = max(1, int(timeout / max(step, 0.01)))
        self.ec2.get_waiter(waiter).wait(**kwargs, WaiterConfig={"Delay": step, "MaxAttempts": attempts})

    def wait_snapshots(self, snapshot_ids: list[str], *, delay: float, timeout: float,
                       stop: threading.Event | None = None) -> None:
        """Until every snapshot is ``completed``; one in ``error`` fails the wait.

        Not the EC2 waiter: a waiter can't be interrupted, and completing a snapshot can take
        minutes. ``stop`` set (the activity was cancelled) ends the wait at the next poll.
        """
        step = self.poll_delay if self.poll_delay is not None else delay
        pending: list[str] = list(snapshot_ids)

        def completed() -> bool | None:
            nonlocal pending
            if stop is not None and stop.is_set():
                raise TransferError("stopped waiting for the snapshots to complete: cancelled")
            snaps = self.ec2.describe_snapshots(SnapshotIds=snapshot_ids)["Snapshots"]
            for snap in snaps:
                if snap.get("State") == "error":
                    raise ProviderError(f"snapshot {snap['SnapshotId']} failed: "
                                        f"{snap.get('StateMessage') or 'state error'}")
            done = {snap["SnapshotId"] for snap in snaps if snap.get("State") == "completed"}
            pending = [sid for sid in snapshot_ids if sid not in done]
            return None if pending else True

        if poll_until(time.monotonic() + timeout, step, completed) is None:
            raise ProviderTransient(f"snapshot(s) {', '.join(pending)} not completed after {timeout:.0f}s")

    @property
    def ec2(self) -> Any:
        return self.client("ec2")

    @property
    def ebs(self) -> Any:
        return self.client("ebs")
