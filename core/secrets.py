"""Secret values in ``source_environment``/``destination_environment``: which keys, and their references.

The rule (also in the README): a key's value is secret when

* the provider's environment schema marks the property (``"x-secret": true``, ``"writeOnly": true``
  or ``"format": "password"``), at any depth of the schema; or
* the key's name looks like a credential: split into words (``_``, ``-``, ``.``, spaces and
  camelCase), one word is in ``SECRET_WORDS`` (``password``, ``pwd``, ``auth``, ``token``…), or two
  adjacent words are in ``SECRET_PAIRS`` (``api key``, ``private key``…), or the last word is
  ``key`` (``key``, ``ssh_key``, ``account_key``; not ``key_name``); and the last word does not say the
  value only *describes* a secret (``auth_url``, ``token_type``, ``password_file``: ``DESCRIPTORS``).

``secret_ref``/``secret_id`` are Barbican references, not secrets. Booleans and ``null`` are never
secret (``use_auth: true`` tells nothing). Any other value under a secret key is secret whole,
whatever its shape (a string, a number, a dict of credentials).

At rest each secret value is replaced by a reference ``{"$sterna_secret": "<action id>/<uuid>"}``,
and the values go, encrypted, to the action's ``environment_secrets`` column. The references are
what the workflows carry; ``activities.environments`` puts the values back inside the activity.
"""

from __future__ import annotations

import itertools
import re
import uuid
from collections.abc import Callable, Collection, Iterator
from typing import Any

from core.errors import InvalidInput

MARKER = "$sterna_secret"
REFERENCE_KEYS = frozenset({"secret_ref", "secret_id"})

SECRET_WORDS = frozenset({
    "password", "passwd", "pwd", "pass", "passphrase", "passcode", "secret", "secrets", "token", "tokens",
    "auth", "authorization", "credential", "credentials", "creds", "apikey", "privatekey", "pkey", "sas",
    "cookie",
})
SECRET_PAIRS = frozenset({("api", "key"), ("private", "key"), ("access", "token"), ("client", "secret")})
DESCRIPTORS = frozenset({
    "url", "uri", "urls", "endpoint", "host", "type", "types", "method", "strategy", "mode", "version",
    "name", "file", "path", "enabled", "required", "expiry", "expires", "ttl", "length", "policy", "plugin",
    "region", "domain", "scope",
})
_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")


def words(name: str) -> list[str]:
    """``adminPassword`` -> ``["admin", "password"]``; ``X-Auth-Token`` -> ``["x", "auth", "token"]``."""
    return [w.lower() for w in _WORDS.findall(name)]


def is_secret_key(name: str, marked: Collection[str] = ()) -> bool:
    """The documented rule (module docstring); ``marked`` are the names a provider schema marks."""
    if name in marked:
        return True
    if name.lower() in REFERENCE_KEYS:
        return False
    parts = words(name)
    if not parts or parts[-1] in DESCRIPTORS:
        return False
    if any(p in SECRET_WORDS for p in parts) or any(pair in SECRET_PAIRS for pair in itertools.pairwise(parts)):
        return True
    return parts[-1] == "key"


def schema_secret_keys(schema: Any) -> set[str]:
    """Property names a JSON schema marks secret, at any depth (``properties``, ``items``, ``oneOf``…)."""
    found: set[str] = set()
    if isinstance(schema, dict):
        for name, prop in (schema.get("properties") or {}).items():
            if isinstance(prop, dict) and (prop.get("x-secret") is True or prop.get("writeOnly") is True
                                           or prop.get("format") == "password"):
                found.add(str(name))
        for value in schema.values():
            found |= schema_secret_keys(value)
    elif isinstance(schema, list):
        for value in schema:
            found |= schema_secret_keys(value)
    return found


def is_reference(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get(MARKER), str)


def _secret_value(value: Any) -> bool:
    return value is not None and not isinstance(value, bool) and not is_reference(value)


def seal_tree(value: Any, owner: str, marked: Collection[str] = ()) -> tuple[Any, dict[str, Any]]:
    """``value`` with each secret replaced by a reference owned by ``owner``, and the new ``{id: secret}``.

    References already in ``value`` (a stored environment merged with an update) stay as they are.
    """
    found: dict[str, Any] = {}

    def walk(node: Any) -> Any:
        if is_reference(node):
            return node
        if isinstance(node, dict):
            out = {}
            for k, v in node.items():
                if is_secret_key(str(k), marked) and _secret_value(v):
                    ref = f"{owner}/{uuid.uuid4()}"
                    found[ref] = v
                    out[k] = {MARKER: ref}
                else:
                    out[k] = walk(v)
            return out
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    return walk(value), found


#: a reference that carries its value, encrypted with the service's key: for the environment of a
#: call that is never stored (an endpoint's options or instances), so it has no row to point at
INLINE = "inline:"


def seal_inline(value: Any, encrypt: Callable[[Any], str], marked: Collection[str] = ()) -> Any:
    """``value`` with each secret replaced by an ``INLINE`` reference holding ``encrypt(secret)``.

    References already in ``value`` (a stored environment merged with an update) stay as they are.
    """
    sealed, found = seal_tree(value, "inline", marked)
    tokens = {ref: INLINE + encrypt(secret) for ref, secret in found.items()}
    return resolve_tree(sealed, lambda ref: {MARKER: tokens.get(ref, ref)})


def references(value: Any) -> Iterator[str]:
    """Every reference in ``value``, at any depth."""
    if is_reference(value):
        yield value[MARKER]
    elif isinstance(value, dict):
        for v in value.values():
            yield from references(v)
    elif isinstance(value, list):
        for v in value:
            yield from references(v)


def owner_of(ref: str) -> str:
    return ref.split("/", 1)[0]


def resolve_tree(value: Any, lookup: Callable[[str], Any]) -> Any:
    """``value`` with each reference replaced by ``lookup(reference)``."""
    if is_reference(value):
        return lookup(value[MARKER])
    if isinstance(value, dict):
        return {k: resolve_tree(v, lookup) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_tree(v, lookup) for v in value]
    return value


def refuse_references(value: Any, where: str) -> None:
    """A client may not send references: they point at stored secrets, and only Sterna makes them."""
    if next(references(value), None) is not None:
        raise InvalidInput(f"{where} may not contain '{MARKER}' objects")
