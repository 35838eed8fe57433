"""The render context of a message, built from the latest state and what the message is about."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from outreach import policy as pol
from outreach.domain import BorrowerState, LoanState, PlannedMessage


def loan_context(loan: LoanState, days_past_due: int) -> dict[str, Any]:
    return {
        "id": loan.id,
        "product": loan.product,
        "currency": loan.currency,
        "amount_due": loan.amount_due,
        "balance": loan.balance,
        "days_past_due": days_past_due,
        "due_date": loan.due_date,
        "account_number": loan.account_number,
    }


def render_context(
    *,
    borrower: BorrowerState,
    loan: LoanState | None,
    message: PlannedMessage,
    locale: str,
    lender: dict[str, str],
    timezone: str,
    days_past_due: int | None,
    unsubscribe_url: str | None,
) -> dict[str, Any]:
    context: dict[str, Any] = {
        "borrower": {"id": borrower.id, "name": borrower.name, "locale": locale},
        "lender": lender,
        "stage": message.stage,
        "locale": locale,
        "timezone": timezone,
    }
    if unsubscribe_url is not None:
        context["unsubscribe_url"] = unsubscribe_url
    if loan is None:
        return context
    context["loan"] = loan_context(
        loan, days_past_due if days_past_due is not None else loan.days_past_due
    )
    refs = message.refs
    if promise_id := refs.get("promise_id"):
        for promise in loan.promises:
            if promise.id == promise_id:
                context["promise"] = {
                    "amount": promise.amount,
                    "promised_date": promise.promised_date,
                }
    if plan_id := refs.get("plan_id"):
        for plan in loan.plans:
            if plan.id == plan_id:
                context["plan"] = {
                    "instalments": [
                        {"amount": item.amount, "due_date": item.due_date}
                        for item in plan.instalments
                    ]
                }
                due = refs.get("instalment_due_date")
                for number, item in enumerate(plan.instalments, start=1):
                    if due and item.due_date == dt.date.fromisoformat(due):
                        context["instalment"] = {
                            "amount": item.amount,
                            "due_date": item.due_date,
                            "number": number,
                            "count": len(plan.instalments),
                        }
    if visit_id := refs.get("visit_id"):
        for visit in loan.visits:
            if visit.id == visit_id:
                context["visit"] = {
                    "visit_at": visit.visit_at,
                    "collector_name": visit.collector_name,
                    "collector_id": visit.collector_id,
                }
    if payment_id := refs.get("payment_id"):
        for payment in loan.payments:
            if payment.id == payment_id:
                context["payment"] = {
                    "amount": payment.amount,
                    "paid_at": payment.paid_at,
                    "amount_due_after": max(payment.amount_due_after, Decimal(0)),
                }
    return context


def message_context(
    policy: pol.Policy,
    borrower: BorrowerState,
    loan: LoanState | None,
    message: PlannedMessage,
    now: dt.datetime,
    unsubscribe_url: str | None,
) -> tuple[str, dict[str, Any]]:
    """The locale a message is rendered in and its render context, on the state given, as
    it would be handed over at `now`."""
    locale = policy.locale_for(borrower.locale)
    zones = pol.candidate_zones(policy, borrower)
    context = render_context(
        borrower=borrower,
        loan=loan,
        message=message,
        locale=locale,
        lender=policy.sender_for(locale),
        timezone=zones[0].key if zones else policy.default_zone.key,
        days_past_due=pol.days_past_due_at(policy, loan, now) if loan else None,
        unsubscribe_url=unsubscribe_url,
    )
    return locale, context
