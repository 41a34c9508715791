"""Access policy under Coriolis's rule names (``migration:<resource>:<action>``).

Every rule defaults to ``rule:admin_or_owner``, as in Coriolis's ``policy.yaml``. A YAML or
JSON file (``STERNA_POLICY_FILE``) overrides any rule; its syntax is the oslo.policy subset
that Coriolis deployments use::

    "migration:migrations:create": "role:admin or role:member"
    "migration:endpoints:delete": "rule:admin"
    "migration:providers:list": "@"          # anyone authenticated
    "migration:diagnostics:get": "!"         # nobody

Checks: ``rule:<name>``, ``role:<name>``, ``is_admin:True``, ``<credential>:%(<target>)s``
(e.g. ``project_id:%(project_id)s``), ``<credential>:<literal>``, ``@``, ``!``; combined with
``and``, ``or``, ``not`` and parentheses. An unparsable rule denies (and is reported at load).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from api.context import RequestContext
from api.errors import Forbidden

Check = Callable[[Mapping[str, Any], Mapping[str, Any], "Policy"], bool]

_ACTIONS = {
    "migrations": ["create", "list", "show", "cancel", "delete"],
    "endpoints": ["create", "list", "show", "update", "delete", "validate_connection", "list_instances",
                  "get_instance", "list_networks", "list_storage", "list_destination_options",
                  "list_source_options", "list_source_minion_pool_options",
                  "list_destination_minion_pool_options", "export_inventory"],
    "transfers": ["create", "list", "show", "update", "delete", "delete_disks"],
    "transfer_executions": ["create", "list", "show", "cancel", "delete"],
    "transfer_schedules": ["create", "list", "show", "update", "delete"],
    "deployments": ["create", "list", "show", "cancel", "delete"],
    "minion_pools": ["create", "list", "show", "update", "delete", "allocate", "refresh", "deallocate"],
    "regions": ["create", "list", "show", "update", "delete"],
    "services": ["create", "list", "show", "update", "delete"],
    "providers": ["list"],
    "diagnostics": ["get"],
}

DEFAULT_RULES: dict[str, str] = {
    "admin": "role:admin or is_admin:True",
    "admin_or_owner": "is_admin:True or role:admin or project_id:%(project_id)s",
    "default": "rule:admin_or_owner",
    **{f"migration:{res}:{act}": "rule:admin_or_owner" for res, acts in _ACTIONS.items() for act in acts},
}

def _tokens(text: str) -> list[str]:
    """Whitespace-separated words, with leading '(' and trailing ')' split off (as oslo.policy
    does), so that ``%(project_id)s`` inside a check keeps its parentheses."""
    out: list[str] = []
    for word in text.split():
        head = len(word) - len(word.lstrip("("))
        tail = len(word) - len(word.rstrip(")"))
        core = word[head:len(word) - tail]
        # "%(x)s)" ends with one ')' of its own only when it closes a format: keep it.
        out += ["("] * head + ([core] if core else []) + [")"] * tail
    return out


def _parse(text: str) -> Check:
    tokens = _tokens(text)
    pos = 0

    def peek() -> str | None:
        return tokens[pos] if pos < len(tokens) else None

    def take() -> str:
        nonlocal pos
        pos += 1
        return str(tokens[pos - 1])

    def expr() -> Check:
        parts = [term()]
        while peek() is not None and peek().lower() == "or":  # type: ignore[union-attr]
            take()
            parts.append(term())
        return parts[0] if len(parts) == 1 else lambda c, t, p: any(x(c, t, p) for x in parts)

    def term() -> Check:
        parts = [factor()]
        while peek() is not None and peek().lower() == "and":  # type: ignore[union-attr]
            take()
            parts.append(factor())
        return parts[0] if len(parts) == 1 else lambda c, t, p: all(x(c, t, p) for x in parts)

    def factor() -> Check:
        tok = peek()
        if tok is None:
            raise ValueError("unexpected end of rule")
        if tok.lower() == "not":
            take()
            inner = factor()
            return lambda c, t, p: not inner(c, t, p)
        if tok == "(":
            take()
            inner = expr()
            if take() != ")":
                raise ValueError("missing ')'")
            return inner
        return atom(take())

    tree = expr() if tokens else _always
    if pos != len(tokens):
        raise ValueError(f"unexpected '{tokens[pos]}'")
    return tree


def _always(_c: Mapping[str, Any], _t: Mapping[str, Any], _p: Policy) -> bool:
    return True


def atom(tok: str) -> Check:
    if tok == "@":
        return _always
    if tok == "!":
        return lambda c, t, p: False
    kind, sep, match = tok.partition(":")
    if not sep:
        raise ValueError(f"'{tok}' is not a check")
    if kind == "rule":
        return lambda c, t, p: p.check(match, c, t)
    if kind == "role":
        return lambda c, t, p: match.lower() in {r.lower() for r in c.get("roles", [])}
    if kind == "is_admin":
        want = match.lower() == "true"
        return lambda c, t, p: bool(c.get("is_admin")) == want

    def generic(c: Mapping[str, Any], t: Mapping[str, Any], _p: Policy) -> bool:
        try:
            expected = match % t if "%(" in match else match
        except KeyError:
            return False
        value = c.get(kind)
        return value is not None and str(value) == str(expected)

    return generic


class Policy:
    """Rules by name; ``enforce`` raises 403 (Coriolis body) when a rule denies."""

    def __init__(self, overrides: Mapping[str, str] | None = None) -> None:
        self.rules: dict[str, Check] = {}
        for name, text in {**DEFAULT_RULES, **(overrides or {})}.items():
            self.rules[name] = _parse(str(text))

    @classmethod
    def from_file(cls, path: Path | None) -> Policy:
        if path is None:
            return cls()
        raw = path.read_text()
        data: Any
        if path.suffix == ".json":
            data = json.loads(raw)
        else:
            import yaml

            data = yaml.safe_load(raw) or {}
        if not isinstance(data, dict):
            raise ValueError(f"policy file {path} must hold a mapping of rule names to rules")
        return cls({str(k): str(v) for k, v in data.items()})

    def check(self, name: str, creds: Mapping[str, Any], target: Mapping[str, Any]) -> bool:
        rule = self.rules.get(name) or self.rules["default"]
        return rule(creds, target, self)

    def enforce(self, name: str, ctx: RequestContext, target: Mapping[str, Any] | None = None) -> None:
        creds = {"roles": ctx.roles, "is_admin": ctx.is_admin, "user_id": ctx.user_id,
                 "project_id": ctx.token_project_id or ctx.project_id}
        if not self.check(name, creds, target or {"project_id": ctx.project_id, "user_id": ctx.user_id}):
            raise Forbidden(f"Policy doesn't allow {name} to be performed.")
