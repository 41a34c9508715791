"""The policy engine under Coriolis's rule names: defaults, overrides from a file, the rule syntax."""

from __future__ import annotations

from pathlib import Path

import pytest

from api.context import RequestContext
from api.errors import Forbidden
from api.policy import DEFAULT_RULES, Policy


def ctx(project: str = "p1", roles: tuple[str, ...] = ("member",), token_project: str | None = None,
        is_admin: bool = False) -> RequestContext:
    return RequestContext(project_id=project, user_id="u", roles=list(roles), is_admin=is_admin,
                          token_project_id=token_project or project)


def test_every_coriolis_rule_defaults_to_admin_or_owner() -> None:
    assert DEFAULT_RULES["migration:migrations:create"] == "rule:admin_or_owner"
    assert DEFAULT_RULES["migration:endpoints:list_destination_options"] == "rule:admin_or_owner"
    policy = Policy()
    policy.enforce("migration:migrations:create", ctx())  # owner
    policy.enforce("migration:migrations:create", ctx(roles=("admin",), token_project="p0"))  # admin
    with pytest.raises(Forbidden, match="migration:migrations:create"):
        policy.enforce("migration:migrations:create", ctx(token_project="p2"))  # neither


def test_a_yaml_file_overrides_single_rules(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text('"migration:migrations:create": "role:admin or role:member"\n'
                    '"migration:migrations:delete": "!"\n"migration:providers:list": "@"\n')
    policy = Policy.from_file(path)
    policy.enforce("migration:migrations:create", ctx(roles=("member",)))
    with pytest.raises(Forbidden):
        policy.enforce("migration:migrations:create", ctx(roles=("reader",)))
    policy.enforce("migration:migrations:list", ctx(roles=("reader",)))  # untouched default
    with pytest.raises(Forbidden):
        policy.enforce("migration:migrations:delete", ctx(roles=("admin",)))
    policy.enforce("migration:providers:list", ctx(token_project="elsewhere"))


def test_json_files_and_nested_expressions(tmp_path: Path) -> None:
    path = tmp_path / "policy.json"
    path.write_text('{"migration:endpoints:delete": "(role:member and project_id:%(project_id)s) and not role:reader"}')
    policy = Policy.from_file(path)
    policy.enforce("migration:endpoints:delete", ctx(roles=("member",)))
    with pytest.raises(Forbidden):
        policy.enforce("migration:endpoints:delete", ctx(roles=("member", "reader")))
    with pytest.raises(Forbidden):
        policy.enforce("migration:endpoints:delete", ctx(roles=("member",), token_project="p9"))


def test_a_malformed_rule_is_reported_at_load(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        Policy({"migration:migrations:list": "role:a or"})
