"""Morph options in ``destination_environment`` are checked when a migration or transfer is created or
updated: a bad value is a 400 in Coriolis's error format then, and nothing is written."""

from __future__ import annotations

import pytest

from tests.api.test_transfers import counts, error_of
from tests.conftest import RunningStack
from tests.helpers import endpoints, inventories

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("stack", ["sqlite"], indirect=True)
@pytest.mark.parametrize("key", ["skip_os_morphing_network", "keep_static_ip"])
def test_a_morph_flag_must_be_a_boolean(stack: RunningStack, key: str) -> None:
    message = f"destination_environment.{key} must be true or false"
    src, dst = inventories(stack, ["vm-a"], data_mib=2)
    with stack.client() as api:
        origin, dest = endpoints(api, src, dst)
        migrations, transfers = len(api.list_migrations()), counts(stack, api)
        fields = {"origin_endpoint_id": origin, "destination_endpoint_id": dest, "instances": ["vm-a"]}
        # Strings and numbers a client may mean as booleans are refused: each reads differently in Python.
        for value in ("true", "false", 1, 0):
            env = {"destination_environment": {key: value}}
            assert message in error_of(api.http.post("/migrations", json={"migration": {**fields, **env}}), 400)
            assert message in error_of(api.http.post("/transfers", json={"transfer": {**fields, **env}}), 400)
        assert (len(api.list_migrations()), counts(stack, api)) == (migrations, transfers)

        t = api.create_transfer(**fields, destination_environment={key: True})
        r = api.http.put(f"/transfers/{t['id']}", json={"transfer": {"destination_environment": {key: "no"}}})
        assert message in error_of(r, 400)
        assert api.get_transfer(t["id"])["destination_environment"][key] is True
        api.update_transfer(t["id"], destination_environment={key: False})
        assert api.get_transfer(t["id"])["destination_environment"][key] is False
