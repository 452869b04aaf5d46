"""Each operator command: the job it launches and its run config, checked before anything runs.

Pure: no Dagster, no Stripe, no AWS. A bad argument raises ConfigProblem naming the argument and
what was wrong, so `python -m pipelines.ops` fails before a run exists, let alone a Stripe call.
The checks are billing's own (pipelines/billing/operator_checks.py), which the jobs run again for
the UI's launchpad.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pipelines.billing.operator_checks import (REFUND_REASONS, RECONCILE_MODES, id_problem,  # noqa: F401 - the CLI's choices
                                              reconcile_mode_problem, refund_problem)


class ConfigProblem(ValueError):
    pass


def _check(problem: str | None) -> None:
    if problem:
        raise ConfigProblem(problem)


def _op(op: str, **config: Any) -> dict:
    return {"ops": {op: {"config": {k: v for k, v in config.items() if v is not None}}}}


def reconcile(mode: str = "incremental") -> dict:
    _check(reconcile_mode_problem(mode))
    return _op("reconcile_billing", mode=mode)


def resync_customer(customer_id: str) -> dict:
    _check(id_problem("customer", "customer_id", customer_id))
    return _op("resync_customer", customer_id=customer_id)


def refund(payment_id: str, amount: int | None = None, reason: str | None = None) -> dict:
    _check(refund_problem(payment_id, amount, reason))
    return _op("refund_payment", payment_id=payment_id, amount=amount, reason=reason)


def cancel_subscription(subscription_id: str, at_period_end: bool = False) -> dict:
    _check(id_problem("subscription", "subscription_id", subscription_id))
    return _op("cancel_subscription", subscription_id=subscription_id, at_period_end=at_period_end)


def replay(op: str) -> Callable[..., dict]:
    def config(limit: int = 10_000) -> dict:
        if limit <= 0:
            raise ConfigProblem(f"limit: must be a positive number of quarantined rows, got {limit}")
        return _op(op, limit=limit)
    return config


def seat_sync() -> dict:
    return {}


@dataclass(frozen=True)
class Command:
    job: str
    run_config: Callable[..., dict]
    what: str


COMMANDS: Mapping[str, Command] = {
    "reconcile": Command("reconcile_billing_job", reconcile,
                         "reconcile the billing tables with Stripe (incremental, or --mode full)"),
    "resync-customer": Command("resync_customer_job", resync_customer,
                               "re-read a customer and what it owns from Stripe, repair the rows"),
    "refund": Command("refund_payment_job", refund, "refund a payment in full or in part"),
    "cancel-subscription": Command("cancel_subscription_job", cancel_subscription,
                                   "cancel a subscription now or at period end"),
    "seat-sync": Command("seat_sync_job", seat_sync,
                         "set each live subscription's seats to its organisation's member count"),
    "replay-ses": Command("replay_ses_quarantine_job", replay("replay_ses_quarantine"),
                          "replay quarantined SES notifications after a fix"),
    "replay-stripe": Command("replay_stripe_quarantine_job", replay("replay_stripe_quarantine"),
                             "replay quarantined Stripe events after a fix"),
}
