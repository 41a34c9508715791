"""Environment secrets: sealed in the record DB, given back in clear only to an activity's input."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from activities.environments import resolve_args
from core.errors import NotFound
from core.secrets import MARKER, references
from store.models import Migration
from store.repo import Store
from workflows.types import CleanupInput, StepInput, TaskRef

SOURCE = {"region": "region-plain-0", "pwd": "pwd-plain-1", "nested": {"deeper": [{"auth": "auth-plain-2"}]}}
DEST = {"adminPassword": "admin-plain-3", "api_key": "key-plain-4", "license": "marked-plain-5", "verify_boot": False}
PLAIN = ["pwd-plain-1", "auth-plain-2", "admin-plain-3", "key-plain-4", "marked-plain-5"]


def _transfer(store: Store) -> str:
    a = store.create_endpoint(project_id="p", user_id=None, name="a", type="local", connection_info={"path": "/a"})
    b = store.create_endpoint(project_id="p", user_id=None, name="b", type="local", connection_info={"path": "/b"})
    row = store.create_action({"type": "transfer", "project_id": "p", "origin_endpoint_id": a.id,
                               "destination_endpoint_id": b.id, "instances": ["vm"],
                               "source_environment": SOURCE, "destination_environment": DEST},
                              marked={"destination_environment": {"license"}})
    return row.id


def _raw_rows(store: Store) -> str:
    with store.db.engine.connect() as conn:
        # Each value on its own: a Row's repr shortens long strings.
        return " ".join(str(v) for r in conn.execute(text("SELECT * FROM migrations")) for v in r)


def test_values_are_sealed_at_rest_and_resolved_for_an_activity(store: Store) -> None:
    tid = _transfer(store)
    raw = _raw_rows(store)
    assert "region-plain-0" in raw, "the check reads the environments"
    assert not [p for p in PLAIN if p in raw], "a secret value is in the record DB in plain text"
    row = store.get_action("transfer", None, tid)
    assert row.source_environment["region"] == "region-plain-0" and row.destination_environment["verify_boot"] is False
    assert len(set(references([row.source_environment, row.destination_environment]))) == 5

    step = StepInput.for_task(row, TaskRef(migration_id=tid, instance="vm", task_type="X"))
    cleanup = CleanupInput(step=step)
    assert not [p for p in PLAIN if p in cleanup.model_dump_json()], "the activity input holds a plain value"
    resolved, untouched = resolve_args(store, [cleanup, "no model"])
    assert untouched == "no model"
    assert resolved.step.source_environment == SOURCE
    assert {k: resolved.step.destination_environment[k] for k in DEST} == DEST


def test_update_keeps_old_references_and_seals_new_values(store: Store) -> None:
    tid = _transfer(store)
    before = store.get_action("transfer", None, tid)
    env = {**before.destination_environment, "api_key": "key-plain-6"}
    after = store.update_transfer(None, tid, {"destination_environment": env})
    assert "key-plain-6" not in _raw_rows(store)
    assert after.destination_environment["adminPassword"] == before.destination_environment["adminPassword"]
    # Everything ever referenced stays resolvable: a deployment made earlier holds the older references.
    refs = set(references([before.destination_environment, after.destination_environment]))
    values = store.environment_secrets(refs)
    assert {"key-plain-4", "key-plain-6", "admin-plain-3"} <= set(values.values())


def test_an_unknown_reference_is_not_found(store: Store) -> None:
    tid = _transfer(store)
    with pytest.raises(NotFound):
        store.environment_secrets([f"{tid}/not-a-stored-one"])
    step = StepInput(task=TaskRef(migration_id=tid, instance="vm", task_type="X"), origin_endpoint_id="a",
                     destination_endpoint_id="b", source_environment={"pwd": {MARKER: "no-such-action/x"}})
    with pytest.raises(NotFound):
        resolve_args(store, [step])


def test_plain_values_of_an_older_version_are_sealed_after_upgrade(store: Store) -> None:
    a = store.create_endpoint(project_id="p", user_id=None, name="a", type="local", connection_info={"path": "/a"})
    old = Migration(type="transfer", project_id="p", origin_endpoint_id=a.id, destination_endpoint_id=a.id,
                    instances=["vm"], source_environment=SOURCE, destination_environment={})
    with store.db.session() as s:  # as the version before environment secrets wrote it
        s.add(old)
    assert "pwd-plain-1" in _raw_rows(store)
    assert store.seal_plain_environments() == 1
    assert store.seal_plain_environments() == 0, "idempotent"
    assert "pwd-plain-1" not in _raw_rows(store) and "auth-plain-2" not in _raw_rows(store)
    row = store.get_action("transfer", None, old.id)
    values = store.environment_secrets(references(row.source_environment))
    assert sorted(values.values()) == ["auth-plain-2", "pwd-plain-1"]


def test_an_endpoint_calls_inline_secrets_resolve_for_its_activity(store: Store) -> None:
    from core.secrets import seal_inline
    from workflows.types import EndpointCall

    env = {"region": "r-plain", "password": "inline-plain-6", "nested": [{"token": "inline-plain-7"}]}
    sealed = seal_inline(env, lambda value: store.box.seal({"value": value}))
    call = EndpointCall(endpoint_id="e", operation="list_instances", env=sealed)
    assert "inline-plain-6" not in call.model_dump_json() and "inline-plain-7" not in call.model_dump_json()
    assert sealed["region"] == "r-plain" and set(sealed["password"]) == {MARKER}
    [resolved] = resolve_args(store, [call])
    assert resolved.env == env


def test_a_stored_environment_merged_with_new_secrets_resolves_whole_for_an_endpoint_call(store: Store) -> None:
    """A transfer update's destination check: stored references stay, the update's secrets go inline."""
    from core.secrets import seal_inline
    from workflows.types import EndpointCall

    row = store.get_action("transfer", None, _transfer(store))
    merged = {**row.destination_environment, "api_key": "inline-plain-8"}
    sealed = seal_inline(merged, lambda value: store.box.seal({"value": value}))
    assert sealed["adminPassword"] == row.destination_environment["adminPassword"]
    call = EndpointCall(endpoint_id="e", operation="check_destination_environment", env=sealed)
    assert "inline-plain-8" not in call.model_dump_json()
    [resolved] = resolve_args(store, [call])
    assert resolved.env == {**DEST, "api_key": "inline-plain-8"}
