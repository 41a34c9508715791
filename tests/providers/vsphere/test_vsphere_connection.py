"""Connection validation against the simulator: good login, and clear errors naming each cause."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from core.errors import AuthenticationFailed, ConnectionFailed, InvalidInput, NotFound
from providers.vsphere.connection import Endpoint
from providers.vsphere.provider import VsphereProvider
from tests.peers.vcsim import vcsim


def test_valid_credentials_with_port_in_host(vsphere_connection_info: dict[str, Any]) -> None:
    VsphereProvider(vsphere_connection_info).validate_connection()


def test_port_may_come_as_its_own_key(vsphere_connection_info: dict[str, Any]) -> None:
    host, port = vsphere_connection_info["host"].rsplit(":", 1)
    VsphereProvider({**vsphere_connection_info, "host": host, "port": int(port)}).validate_connection()


def test_wrong_password_is_authentication_failed_without_the_password(
    vsphere_connection_info: dict[str, Any],
) -> None:
    wrong = "not-the-Passw0rd"
    with pytest.raises(AuthenticationFailed) as err:
        VsphereProvider({**vsphere_connection_info, "password": wrong}).validate_connection()
    message = str(err.value)
    assert "wrong user name or password" in message
    assert vsphere_connection_info["username"] in message
    assert wrong not in message and vsphere_connection_info["password"] not in message
    assert wrong not in repr(err.value.__cause__) and err.value.__cause__ is None


def test_unreachable_host_is_connection_failed(vsphere_connection_info: dict[str, Any]) -> None:
    with socket.socket() as probe:  # bound, never listening: connections to it are refused
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        with pytest.raises(ConnectionFailed) as err:
            VsphereProvider({**vsphere_connection_info, "host": f"127.0.0.1:{port}"}).validate_connection()
    assert f"127.0.0.1:{port}" in str(err.value)
    assert "connection refused" in str(err.value)
    assert vsphere_connection_info["password"] not in str(err.value)


def test_self_signed_certificate_needs_allow_untrusted(vsphere_connection_info: dict[str, Any]) -> None:
    with pytest.raises(ConnectionFailed) as err:
        VsphereProvider({**vsphere_connection_info, "allow_untrusted": False}).validate_connection()
    assert "not trusted" in str(err.value)
    assert "allow_untrusted" in str(err.value)


def test_incomplete_connection_info_is_invalid_input(vsphere_connection_info: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput, match="password"):
        VsphereProvider({k: v for k, v in vsphere_connection_info.items() if k != "password"})
    with pytest.raises(InvalidInput, match="disagree"):
        VsphereProvider({**vsphere_connection_info, "port": 1})


def test_unknown_vm_is_not_found(vsphere_connection_info: dict[str, Any], vcsim_server: vcsim.Vcsim) -> None:
    with pytest.raises(NotFound) as err:
        VsphereProvider(vsphere_connection_info).get_instance({}, "no-such-vm")
    assert "no-such-vm" in str(err.value)
    assert vcsim_server.host in str(err.value)


def test_schema_lists_the_connection_keys() -> None:
    schema = VsphereProvider.connection_info_schema()
    assert set(schema["properties"]) >= {"host", "port", "username", "password", "allow_untrusted"}
    assert VsphereProvider.PLUGIN_NAME == "vmware_vsphere"
    assert VsphereProvider.provider_types() == [8, 16, 32, 128, 32768]


@pytest.mark.parametrize(
    ("info", "where"),
    [
        ({"host": "vc.example.com"}, "vc.example.com:443"),
        ({"host": "vc.example.com:8443"}, "vc.example.com:8443"),
        ({"host": "vc.example.com", "port": 9443}, "vc.example.com:9443"),
        ({"host": "https://vc.example.com:444/sdk"}, "vc.example.com:444"),
        ({"host": "[fd00::5]:8443"}, "[fd00::5]:8443"),
    ],
)
def test_host_forms(info: dict[str, Any], where: str) -> None:
    ep = Endpoint.parse({"username": "u", "password": "hunter2", **info})
    assert ep.where == where
    assert "hunter2" not in repr(ep)
