"""Who sees what: hq_admin (and service tokens) everything; a franchisee only its own account's statements and
payout lines; a store manager only its own stores'. Anything not theirs is answered 404, as if absent."""
from __future__ import annotations

from libs.principal import Principal
from libs.refusal import NOT_FOUND, Refusal
from services.settlement.domain.statements import can_read


def readable(principal: Principal, account: str) -> bool:
    return can_read(account, roles=principal.roles, franchisee_id=principal.franchisee_id,
                    store_ids=principal.store_ids)


def not_found(what: str) -> Refusal:
    return Refusal("not-found", f"{what} not found", kind=NOT_FOUND)
