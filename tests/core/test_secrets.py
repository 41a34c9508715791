"""The rule that says which environment keys are secret, and the references that replace their values."""

from __future__ import annotations

import pytest

from core.errors import InvalidInput
from core.secrets import (
    MARKER,
    is_secret_key,
    references,
    refuse_references,
    resolve_tree,
    schema_secret_keys,
    seal_tree,
)

SECRET = ["password", "admin_password", "adminPassword", "passwd", "pwd", "db_pwd", "secret", "client_secret",
          "token", "X-Auth-Token", "auth", "authorization", "credentials", "api_key", "apiKey", "apikey",
          "private_key", "privateKey", "ssh_key", "key", "account_key", "sas_token", "passphrase"]
NOT_SECRET = ["auth_url", "token_type", "password_file", "key_name", "keypair_name", "monkey", "secret_ref",
              "secret_id", "bandwidth_limit", "network_map", "verify_boot", "region", "username", "access_key_id"]


@pytest.mark.parametrize("name", SECRET)
def test_credential_names_are_secret(name: str) -> None:
    assert is_secret_key(name)


@pytest.mark.parametrize("name", NOT_SECRET)
def test_other_names_are_not(name: str) -> None:
    assert not is_secret_key(name)


def test_a_schema_marks_keys_at_any_depth() -> None:
    schema = {"type": "object", "properties": {
        "plain": {"type": "string"},
        "license": {"type": "string", "x-secret": True},
        "nested": {"type": "object", "properties": {"join_code": {"type": "string", "format": "password"}}},
        "list": {"type": "array", "items": {"type": "object", "properties": {"seed": {"writeOnly": True}}}},
    }}
    assert schema_secret_keys(schema) == {"license", "join_code", "seed"}
    assert is_secret_key("license", schema_secret_keys(schema)) and not is_secret_key("license")


def test_seal_replaces_secrets_at_any_depth_and_resolve_restores_them() -> None:
    env = {"region": "r", "pwd": "pw-one", "verify_boot": False, "use_auth": True,
           "nested": [{"auth": {"user": "u", "key": "k"}}, {"token": None}], "license": 424242}
    sealed, found = seal_tree(env, "action-1", {"license"})
    assert sealed["region"] == "r" and sealed["verify_boot"] is False and sealed["use_auth"] is True
    assert sealed["nested"][1] == {"token": None}, "null is no secret"
    for value in (sealed["pwd"], sealed["nested"][0]["auth"], sealed["license"]):
        assert set(value) == {MARKER} and value[MARKER].startswith("action-1/")
    assert sorted(found.values(), key=str) == sorted(["pw-one", {"user": "u", "key": "k"}, 424242], key=str)
    assert "pw-one" not in str(sealed) and "424242" not in str(sealed)
    assert resolve_tree(sealed, found.__getitem__) == env
    # Sealing again (an update merged into a stored environment) keeps the references it finds.
    again, more = seal_tree({**sealed, "api_key": "new"}, "action-1")
    assert set(more.values()) == {"new"} and again["pwd"] == sealed["pwd"]
    assert set(references(again)) == set(found) | set(more)


def test_clients_may_not_send_references() -> None:
    with pytest.raises(InvalidInput, match=MARKER.replace("$", r"\$")):
        refuse_references({"a": [{"b": {MARKER: "other-action/x"}}]}, "source_environment")
    refuse_references({"a": {MARKER: 1}}, "source_environment")  # not a reference: its value is no string
