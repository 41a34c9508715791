"""The Keystone trust of an action (caller -> service user): made with the caller's token when a
migration or transfer is created, because its work outlives that token; only its id is stored."""

from __future__ import annotations

import logging

from api.context import RequestContext
from api.deps import Deps, db

log = logging.getLogger("sterna.api")


def create(d: Deps, ctx: RequestContext) -> str | None:
    """A trust of the caller's roles on its project; None without Keystone (noauth). Blocking."""
    if d.keystone is None or not ctx.auth_token or not ctx.user_id or not ctx.token_project_id:
        return None
    return d.keystone.create_trust(ctx.auth_token, ctx.user_id, ctx.token_project_id, ctx.roles)


def delete(d: Deps, trust_id: str | None) -> None:
    """Blocking; raises when Keystone refuses (a create that failed says so)."""
    if d.keystone is not None and trust_id:
        d.keystone.delete_trust(trust_id)


async def release_transfer(d: Deps, transfer_id: str, trust_id: str | None) -> None:
    """A deleted transfer's trust: deleted in Keystone, then forgotten by it and its deployments (which
    acted through it), so no row shows a trust that is gone. The transfer is deleted already: a
    Keystone failure is a leak to report (the id stays on the rows), not a failed DELETE."""
    if d.keystone is None or not trust_id:
        return
    try:
        await db(delete, d, trust_id)
    except Exception:
        log.warning("could not delete the Keystone trust %s of deleted transfer %s", trust_id, transfer_id,
                    exc_info=True)
        return
    await db(d.store.clear_transfer_trust, transfer_id)
