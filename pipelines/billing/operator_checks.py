"""What the billing operator jobs accept, checked before anything reaches Stripe. Pure: the jobs
(jobs.py) and the command line (pipelines/ops) both ask here, so they refuse with the same words.
Each check returns None, or the problem naming the field and what was wrong."""

from __future__ import annotations

import re

from pipelines.billing.vocab import ReconcileMode

STRIPE_IDS = {"payment": (re.compile(r"^(pi|ch)_[A-Za-z0-9_]+$"), "pi_ or ch_"),
              "subscription": (re.compile(r"^sub_[A-Za-z0-9_]+$"), "sub_"),
              "customer": (re.compile(r"^cus_[A-Za-z0-9_]+$"), "cus_")}
REFUND_REASONS = ("duplicate", "fraudulent", "requested_by_customer")
RECONCILE_MODES = (ReconcileMode.INCREMENTAL.value, ReconcileMode.FULL.value)


def id_problem(kind: str, field: str, value: str | None) -> str | None:
    pattern, prefix = STRIPE_IDS[kind]
    if pattern.match(value or ""):
        return None
    return f"{field}: {value!r} is not a Stripe {kind} id (expected {prefix}...)"


def refund_problem(payment_id: str, amount: int | None, reason: str | None) -> str | None:
    if problem := id_problem("payment", "payment_id", payment_id):
        return problem
    if amount is not None and amount <= 0:
        return f"amount: must be a positive number of minor units, got {amount}"
    if reason is not None and reason not in REFUND_REASONS:
        return f"reason: {reason!r} is not duplicate, fraudulent or requested_by_customer"
    return None


def reconcile_mode_problem(mode: str) -> str | None:
    return None if mode in RECONCILE_MODES else f"mode: {mode!r} is not incremental or full"
