"""Sessions to vCenter/ESXi over pyvmomi, with errors mapped to ``core.errors``.

``connection_info`` is ``{host, username, password, allow_untrusted, port?}``; ``host`` may carry
a port ("10.0.0.5:8443", "[::1]:443"). Messages name the host, the port, the user and the cause,
never the password.
"""

# mypy: allow-untyped-calls
# (pyvmomi's generated data objects and pyVim helpers have untyped signatures)

from __future__ import annotations

import contextlib
import functools
import http.client
import socket
import ssl
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar
from urllib.parse import urlsplit

from pyVim.connect import Disconnect, SmartConnect
from pyVmomi import vim, vmodl

from core.errors import (
    AuthenticationFailed,
    ConnectionFailed,
    InvalidInput,
    NotFound,
    ProviderError,
    SternaError,
)
from core.polling import poll_until

CONNECTION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "host": {"type": "string", "description": "vCenter/ESXi address, optionally host:port"},
        "port": {"type": "integer", "minimum": 1, "maximum": 65535, "default": 443},
        "username": {"type": "string"},
        "password": {"type": "string"},
        "allow_untrusted": {"type": "boolean", "default": False},
    },
    "required": ["host", "username", "password"],
}


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    username: str
    password: str
    allow_untrusted: bool

    def __repr__(self) -> str:  # dataclass repr would print the password
        return f"Endpoint({self.where}, user={self.username!r})"

    @property
    def where(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def ssl_context(self) -> ssl.SSLContext:
        """Verifying context unless ``allow_untrusted`` (self-signed vCenter certificates)."""
        if self.allow_untrusted:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            return ctx
        return ssl.create_default_context()

    @classmethod
    def parse(cls, info: Mapping[str, Any]) -> Endpoint:
        """Validate ``connection_info`` and split ``host[:port]``."""
        missing = [k for k in ("host", "username", "password") if not info.get(k)]
        if missing:
            raise InvalidInput(f"vSphere connection_info lacks {', '.join(missing)}")
        raw = str(info["host"]).strip()
        try:
            parts = urlsplit(raw if "//" in raw else f"//{raw}")
            host, port = parts.hostname, parts.port
        except ValueError as exc:
            raise InvalidInput(f"vSphere host {raw!r} is not host[:port]: {exc}") from None
        if not host:
            raise InvalidInput(f"vSphere host {raw!r} is not host[:port]")
        if info.get("port") is not None:
            try:
                explicit = int(info["port"])
            except (TypeError, ValueError):
                raise InvalidInput(f"vSphere port {info['port']!r} is not a number") from None
            if port is not None and port != explicit:
                raise InvalidInput(f"vSphere host {raw!r} and port {explicit} disagree")
            port = explicit
        return cls(
            host=host,
            port=port or 443,
            username=str(info["username"]),
            password=str(info["password"]),
            allow_untrusted=bool(info.get("allow_untrusted", False)),
        )


def _fault_text(fault: vmodl.MethodFault) -> str:
    name = type(fault).__name__.split(".")[-1]
    msg = getattr(fault, "msg", None) or getattr(fault, "localizedMessage", None) or ""
    return f"{name}: {msg}" if msg else name


P = ParamSpec("P")
R = TypeVar("R")


def translate_faults(what: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Turn pyvmomi faults and lost connections inside a provider call into ``core.errors``."""

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return fn(*args, **kwargs)
            except SternaError:
                raise
            except vmodl.fault.ManagedObjectNotFound:
                raise NotFound(f"{what}: the vSphere object is gone (deleted meanwhile?)") from None
            except (vim.fault.NotAuthenticated, vim.fault.NoPermission) as exc:
                raise AuthenticationFailed(f"{what}: vSphere refused it ({_fault_text(exc)})") from None
            except vmodl.MethodFault as exc:
                raise ProviderError(f"{what} failed: {_fault_text(exc)}") from None
            except (ConnectionError, TimeoutError, ssl.SSLError, http.client.HTTPException) as exc:
                raise ConnectionFailed(
                    f"{what}: lost the connection to vSphere ({type(exc).__name__})"
                ) from None

        return wrapper

    return decorate


def connect(ep: Endpoint) -> vim.ServiceInstance:
    """Log in; raise ``AuthenticationFailed`` / ``ConnectionFailed`` naming the cause."""
    try:
        si: vim.ServiceInstance = SmartConnect(
            host=ep.host,
            port=ep.port,
            user=ep.username,
            pwd=ep.password,
            sslContext=ep.ssl_context(),
            # A host that drops packets must fail in bounded time, not hang the activity.
            httpConnectionTimeout=120,
        )
        return si
    except vim.fault.InvalidLogin:
        raise AuthenticationFailed(
            f"vSphere {ep.where} rejected the login of user {ep.username!r}: wrong user name or password"
        ) from None
    except ssl.SSLCertVerificationError as exc:
        raise ConnectionFailed(
            f"the TLS certificate of vSphere {ep.where} is not trusted ({exc.verify_message}); "
            "set allow_untrusted to accept a self-signed certificate"
        ) from None
    except ssl.SSLError as exc:
        raise ConnectionFailed(f"TLS handshake with vSphere {ep.where} failed: {exc.reason}") from None
    except socket.gaierror as exc:
        raise ConnectionFailed(f"cannot resolve vSphere host {ep.host!r}: {exc.strerror}") from None
    except ConnectionRefusedError:
        raise ConnectionFailed(f"cannot reach vSphere at {ep.where}: connection refused") from None
    except TimeoutError:
        raise ConnectionFailed(f"cannot reach vSphere at {ep.where}: timed out") from None
    except OSError as exc:
        raise ConnectionFailed(f"cannot reach vSphere at {ep.where}: {exc.strerror or exc}") from None
    except http.client.HTTPException as exc:
        raise ConnectionFailed(f"vSphere {ep.where} broke the HTTP exchange: {type(exc).__name__}") from None
    except vmodl.MethodFault as exc:
        raise ProviderError(f"vSphere {ep.where} refused the login: {_fault_text(exc)}") from None


@contextmanager
def session(info: Mapping[str, Any]) -> Iterator[vim.ServiceInstance]:
    """A logged-in ``ServiceInstance`` that logs out on exit."""
    si = connect(Endpoint.parse(info))
    try:
        yield si
    finally:
        # A failed logout must not hide the real outcome.
        with contextlib.suppress(Exception):
            Disconnect(si)


def session_cookie(si: vim.ServiceInstance) -> str:
    """``name=value`` of the SOAP session cookie, for authenticated HTTP transfers."""
    raw: str = si._stub.cookie or ""
    return raw.split(";", 1)[0].strip()


def collect(si: vim.ServiceInstance, kind: type, props: list[str]) -> list[tuple[Any, dict[str, Any]]]:
    """``(object, {property: value})`` for every object of ``kind``, in one paged retrieval."""
    content: Any = si.content
    view = content.viewManager.CreateContainerView(content.rootFolder, [kind], True)
    try:
        pc = vmodl.query.PropertyCollector
        spec = pc.FilterSpec(
            objectSet=[
                pc.ObjectSpec(
                    obj=view,
                    skip=True,
                    selectSet=[
                        pc.TraversalSpec(name="view", path="view", skip=False, type=vim.view.ContainerView)
                    ],
                )
            ],
            propSet=[pc.PropertySpec(type=kind, pathSet=props)],
        )
        collector = content.propertyCollector
        result = collector.RetrievePropertiesEx([spec], pc.RetrieveOptions())
        out: list[tuple[Any, dict[str, Any]]] = []
        while result is not None:
            for obj in result.objects:
                out.append((obj.obj, {p.name: p.val for p in (obj.propSet or [])}))
            result = collector.ContinueRetrievePropertiesEx(result.token) if result.token else None
        return out
    finally:
        view.Destroy()


def properties(si: vim.ServiceInstance, obj: Any, props: list[str]) -> dict[str, Any]:
    """Selected properties of one managed object (missing ones are absent from the dict)."""
    pc = vmodl.query.PropertyCollector
    spec = pc.FilterSpec(
        objectSet=[pc.ObjectSpec(obj=obj)],
        propSet=[pc.PropertySpec(type=type(obj), pathSet=props)],
    )
    try:
        found = si.content.propertyCollector.RetrieveContents([spec])
    except vmodl.fault.ManagedObjectNotFound:
        raise NotFound(f"{obj._moId} no longer exists") from None
    if not found:
        raise NotFound(f"{obj._moId} no longer exists")
    return {p.name: p.val for p in (found[0].propSet or [])}


def wait_task(si: vim.ServiceInstance, task: vim.Task, what: str, timeout: float = 3600) -> Any:
    """Wait for a task by polling narrow properties and return its result.

    ``pyVim.task.WaitForTask`` reads ``info.entity`` too, which some servers (govmomi's
    simulator on snapshot removal) fill with a Snapshot moref that pyvmomi refuses to decode.
    The poll starts at 50 ms (most tasks end in well under a second) and backs off to 2 s.
    """

    def finished() -> tuple[Any] | None:
        info = properties(si, task, ["info.state", "info.error", "info.result"])
        state = info.get("info.state")
        if state == vim.TaskInfo.State.success:
            return (info.get("info.result"),)  # a tuple: a task's result may be None
        if state == vim.TaskInfo.State.error:
            error = info.get("info.error")
            detail = getattr(error, "localizedMessage", None) or ""
            fault = getattr(error, "fault", None)
            if fault is not None:
                detail = f"{_fault_text(fault)} {detail}".strip()
            raise ProviderError(f"vSphere task '{what}' failed: {detail or 'unknown error'}")
        return None

    done = poll_until(time.monotonic() + timeout, 0.05, finished, backoff=2, max_interval=2.0)
    if done is None:
        raise ProviderError(f"vSphere task '{what}' did not finish in {timeout:.0f} s")
    return done[0]
