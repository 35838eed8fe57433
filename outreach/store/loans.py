"""Loans in the database: what the planner asks of them beyond a borrower's state."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from sqlalchemy import Table, select
from sqlalchemy.orm import Session

from outreach.store import models as m
from outreach.store.keysets import keys_in

LOANS = cast(Table, m.Loan.__table__)
_OF_BORROWERS = (
    select(LOANS.c.borrower_id, LOANS.c.id)
    .where(keys_in(LOANS.c.borrower_id, "ids"))
    .order_by(LOANS.c.id)
)


def loan_ids_of_borrowers(session: Session, borrower_ids: Sequence[str]) -> dict[str, list[str]]:
    """Each borrower's loan ids, in id order, in one query per 500 borrowers."""
    found: dict[str, list[str]] = {}
    ids = sorted(set(borrower_ids))
    for index in range(0, len(ids), 500):
        rows = session.execute(_OF_BORROWERS, {"ids": ids[index : index + 500]})
        for borrower_id, loan_id in rows:
            found.setdefault(borrower_id, []).append(loan_id)
    return found


_OPEN = select(LOANS.c.id).where(LOANS.c.closed_reason.is_(None))


def open_loan_ids(session: Session) -> list[str]:
    """Every loan not closed."""
    return list(session.scalars(_OPEN))
