"""Secret values of actions' environments, encrypted at rest (see ``core.secrets`` for the rule).

The JSON columns ``source_environment``/``destination_environment`` keep references only; the
values live in ``migrations.environment_secrets``, one Fernet token per action.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any

from sqlalchemy import select

from core.crypto import SecretBox
from core.errors import NotFound
from core.secrets import INLINE, owner_of, seal_tree
from store.db import Database
from store.models import Migration, new_id

ENVIRONMENTS = ("source_environment", "destination_environment")
#: per environment column, the key names the providers' schemas mark secret
Marked = Mapping[str, Collection[str]]


class EnvironmentSecrets:
    db: Database
    box: SecretBox

    def _seal(self, row: Migration, marked: Marked | None) -> None:
        """Replace the secret values of ``row``'s environments by references, and keep them encrypted.

        Secrets already stored stay, also those no longer referenced: a deployment made before an
        update of its transfer still references the transfer's older ones.
        """
        if not row.id:
            row.id = new_id()
        stored = self.box.open(row.environment_secrets) if row.environment_secrets else {}
        added: dict[str, Any] = {}
        for name in ENVIRONMENTS:
            sealed, new = seal_tree(getattr(row, name) or {}, row.id, (marked or {}).get(name, ()))
            setattr(row, name, sealed)
            added |= new
        if added:
            row.environment_secrets = self.box.seal(stored | added)

    def seal_plain_environments(self) -> int:
        """Seal what a version before environment secrets stored in plain text; returns the rows changed.

        Run after each schema upgrade (idempotent). The name rule applies, not the providers' schema
        marks (the store does not know the providers): none of them marks a key yet.
        """
        changed = 0
        with self.db.session() as s:
            for row in s.scalars(select(Migration)):
                before = (row.source_environment, row.destination_environment)
                self._seal(row, None)
                changed += (row.source_environment, row.destination_environment) != before
        return changed

    def environment_secrets(self, refs: Iterable[str]) -> dict[str, Any]:
        """The values of ``refs``, read from their owners' rows. Only activities call this."""
        wanted = set(refs)
        values: dict[str, Any] = {ref: self.box.open(ref.removeprefix(INLINE))["value"]
                                  for ref in wanted if ref.startswith(INLINE)}
        wanted -= values.keys()
        with self.db.session() as s:
            for owner in {owner_of(ref) for ref in wanted}:
                row = s.get(Migration, owner)
                if row is None:
                    raise NotFound(f"The action {owner} that holds an environment secret could not be found")
                stored = self.box.open(row.environment_secrets) if row.environment_secrets else {}
                values |= {ref: v for ref, v in stored.items() if ref in wanted}
        missing = wanted - values.keys()
        if missing:
            raise NotFound(f"{len(missing)} environment secret(s) of action(s) "
                           f"{', '.join(sorted({owner_of(r) for r in missing}))} could not be found")
        return values
