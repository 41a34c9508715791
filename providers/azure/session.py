"""``connection_info`` → a service-principal credential and ARM clients.

``connection_info`` holds a service principal (tenant, client id, and a secret or a PEM
certificate), the subscription, the location and resource group Sterna works in, and, for
Azure Stack Hub and sovereign clouds, the ARM endpoint, the authority host and the token scope.
``ca_bundle`` names a CA file to trust (a private CA on Azure Stack; the tests' fake ARM).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from core.errors import InvalidInput

PUBLIC_ARM = "https://management.azure.com"
PUBLIC_AUTHORITY = "login.microsoftonline.com"

CONNECTION_INFO_SCHEMA: dict[str, Any] = {
    "$schema": "http://cloudbase.it/coriolis/schemas/azure_connection_info#",
    "type": "object",
    "properties": {
        "tenant_id": {"type": "string", "description": "Entra ID (Azure AD) tenant"},
        "client_id": {"type": "string", "description": "service principal's application id"},
        "client_secret": {"type": "string"},
        "certificate": {"type": "string", "description": "PEM certificate and private key, instead of a secret"},
        "subscription_id": {"type": "string"},
        "location": {"type": "string", "description": "region, e.g. westeurope"},
        "resource_group": {"type": "string", "description": "where disks, NICs and VMs are created"},
        "arm_endpoint": {"type": "string", "description": "ARM URL (Azure Stack, sovereign clouds)",
                         "default": PUBLIC_ARM},
        "authority_host": {"type": "string", "default": PUBLIC_AUTHORITY},
        "credential_scope": {"type": "string", "description": "token scope; default: <arm_endpoint>/.default"},
        "ca_bundle": {"type": "string", "description": "CA file to trust for ARM and the authority"},
    },
    "required": ["tenant_id", "client_id", "subscription_id", "location", "resource_group"],
    "oneOf": [{"required": ["client_secret"]}, {"required": ["certificate"]}],
}

_GUIDISH = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


@dataclass(frozen=True)
class AzureConnection:
    """Parsed ``connection_info``; ``repr`` never shows the secret or certificate."""

    tenant_id: str
    client_id: str
    subscription_id: str
    location: str
    resource_group: str
    client_secret: str | None = field(default=None, repr=False)
    certificate: str | None = field(default=None, repr=False)
    arm_endpoint: str = PUBLIC_ARM
    authority_host: str = PUBLIC_AUTHORITY
    credential_scope: str | None = None
    ca_bundle: str | None = None

    @classmethod
    def from_info(cls, info: Mapping[str, Any]) -> AzureConnection:
        """Check the shape of ``connection_info``; ``InvalidInput`` names what is missing or wrong."""
        missing = [k for k in ("tenant_id", "client_id", "subscription_id", "location", "resource_group")
                   if not isinstance(info.get(k), str) or not info[k].strip()]
        if missing:
            raise InvalidInput(f"Azure connection_info needs {', '.join(repr(m) for m in missing)}")
        if not info.get("client_secret") and not info.get("certificate"):
            raise InvalidInput("Azure connection_info needs 'client_secret' or 'certificate'")
        for key in ("tenant_id", "client_id", "subscription_id"):
            if not _GUIDISH.match(info[key].strip()):
                raise InvalidInput(f"Azure connection_info '{key}' is not a valid identifier")
        arm = str(info.get("arm_endpoint") or PUBLIC_ARM).rstrip("/")
        if urlsplit(arm).scheme != "https":
            raise InvalidInput("Azure 'arm_endpoint' must be an https URL")
        return cls(
            tenant_id=info["tenant_id"].strip(),
            client_id=info["client_id"].strip(),
            subscription_id=info["subscription_id"].strip(),
            location=info["location"].strip(),
            resource_group=info["resource_group"].strip(),
            client_secret=info.get("client_secret") or None,
            certificate=info.get("certificate") or None,
            arm_endpoint=arm,
            authority_host=str(info.get("authority_host") or PUBLIC_AUTHORITY).rstrip("/"),
            credential_scope=info.get("credential_scope") or None,
            ca_bundle=info.get("ca_bundle") or None,
        )

    @property
    def secrets(self) -> tuple[str | None, ...]:
        """Values that must never appear in messages."""
        return (self.client_secret, self.certificate)

    @property
    def scope(self) -> str:
        if self.credential_scope:
            return self.credential_scope
        return f"{self.arm_endpoint}/.default"

    @property
    def verify(self) -> str | bool:
        return self.ca_bundle or True


class AzureClients:
    """One credential and lazily built ARM clients (thread-safe; the SDK clients are)."""

    def __init__(self, conn: AzureConnection) -> None:
        self.conn = conn
        self._lock = threading.Lock()
        self._credential: Any = None
        self._compute: Any = None
        self._network: Any = None

    @property
    def credential(self) -> Any:
        with self._lock:
            if self._credential is None:
                self._credential = self._make_credential()
            return self._credential

    def _make_credential(self) -> Any:
        from azure.identity import CertificateCredential, ClientSecretCredential

        conn = self.conn
        kwargs: dict[str, Any] = {"authority": conn.authority_host, "connection_verify": conn.verify}
        if conn.authority_host != PUBLIC_AUTHORITY:
            # Azure Stack / private authorities are not in Microsoft's instance-discovery list.
            kwargs["disable_instance_discovery"] = True
        if conn.client_secret:
            return ClientSecretCredential(conn.tenant_id, conn.client_id, conn.client_secret, **kwargs)
        assert conn.certificate is not None
        return CertificateCredential(conn.tenant_id, conn.client_id,
                                     certificate_data=conn.certificate.encode(), **kwargs)

    def _kwargs(self) -> dict[str, Any]:
        return {"base_url": self.conn.arm_endpoint, "credential_scopes": [self.conn.scope],
                "connection_verify": self.conn.verify, "user_agent": "sterna"}

    @property
    def compute(self) -> Any:
        from azure.mgmt.compute import ComputeManagementClient

        cred = self.credential
        with self._lock:
            if self._compute is None:
                self._compute = ComputeManagementClient(cred, self.conn.subscription_id, **self._kwargs())
            return self._compute

    @property
    def network(self) -> Any:
        from azure.mgmt.network import NetworkManagementClient

        cred = self.credential
        with self._lock:
            if self._network is None:
                self._network = NetworkManagementClient(cred, self.conn.subscription_id, **self._kwargs())
            return self._network

    @property
    def rg(self) -> str:
        return self.conn.resource_group

    def rg_id(self) -> str:
        return f"/subscriptions/{self.conn.subscription_id}/resourceGroups/{self.conn.resource_group}"
