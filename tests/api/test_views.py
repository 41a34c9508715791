"""Secret masking in views, its inverse on update, and answers shaped by their models."""

import json

import pytest
from pydantic import ValidationError

from api.response_models import ExecutionView, ScheduleView, answer
from api.views import MASK, mask_secrets, unmask


def test_mask_hides_credentials_but_keeps_references() -> None:
    info = {"host": "vc", "password": "pw", "nested": {"api_key": "k", "port": 443},
            "secret_ref": "http://barbican/v1/secrets/x", "allow_untrusted": True}
    masked = mask_secrets(info)
    assert masked == {"host": "vc", "password": MASK, "nested": {"api_key": MASK, "port": 443},
                      "secret_ref": "http://barbican/v1/secrets/x", "allow_untrusted": True}


def test_unmask_restores_untouched_values() -> None:
    old = {"host": "a", "password": "pw", "nested": {"token": "t"}}
    new = {"host": "b", "password": MASK, "nested": {"token": MASK}}
    assert unmask(new, old) == {"host": "b", "password": "pw", "nested": {"token": "t"}}
    assert unmask({"password": "new"}, old) == {"password": "new"}


def test_mask_covers_pwd_auth_and_stored_references_at_any_depth() -> None:
    env = {"pwd": "p", "auth": "a", "x": [{"deep": {"adminPassword": "q", "sealed": {"$sterna_secret": "m/1"}}}],
           "auth_url": "http://keystone", "region": "r"}
    assert mask_secrets(env) == {"pwd": MASK, "auth": MASK, "x": [{"deep": {"adminPassword": MASK, "sealed": MASK}}],
                                 "auth_url": "http://keystone", "region": "r"}


def _schedule_view(**changes: object) -> dict[str, object]:
    view: dict[str, object] = {
        "id": "s", "created_at": None, "updated_at": None, "deleted_at": None, "deleted": "0", "transfer_id": "t",
        "replica_id": "t", "schedule": {"minute": 0}, "expiration_date": None, "enabled": True,
        "shutdown_instance": False, "auto_deploy": False, "trust_id": None}
    view.update(changes)
    return view


def test_an_answer_is_what_its_model_allows_nulls_and_key_order_kept() -> None:
    view = _schedule_view()
    shaped = answer(ScheduleView, dict(reversed(view.items())))
    assert json.dumps(shaped) == json.dumps(dict(reversed(view.items())))
    # An optional field the view leaves out stays out; one it gives is there, nested models included.
    execution = {"id": "e", "created_at": None, "updated_at": None, "deleted_at": None, "deleted": "0",
                 "action_id": "t", "status": "COMPLETED", "number": 1, "type": "transfer_update"}
    assert answer(ExecutionView, execution) == execution
    assert answer(ExecutionView, {**execution, "tasks": []})["tasks"] == []


@pytest.mark.parametrize("view", [
    _schedule_view(internal_note="x"),  # a field the document does not have: never leaks
    {k: v for k, v in _schedule_view().items() if k != "enabled"},  # a field it promises: never silently absent
    _schedule_view(enabled="true"),  # another type: not coerced
])
def test_an_answer_out_of_its_model_fails(view: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        answer(ScheduleView, view)
