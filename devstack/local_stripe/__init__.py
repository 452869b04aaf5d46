"""A stateful local Stripe: the official SDK talks to it over HTTP, unchanged (see README.md).

Modules: wire (form decoding), errors, shapes (object fields from the SDK's typed resources),
store, listing (lists, search), idempotency, events, clock, customers, catalog, payments,
billing (subscriptions, invoices, renewals, dunning), checkout, params, delivery (to SQS),
faults, api (/v1 routes), control (/_control/), server (HTTP), app (the state and its lock).

Run it standalone: python -m devstack.local_stripe --port 12111
"""
