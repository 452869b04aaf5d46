"""A stateful local Stripe: the official SDK talks to it over HTTP, unchanged.

Modules: wire (form decoding, JSON), errors, shapes (object skeletons from the SDK's typed
resources), store (objects, ordered per type), listing (lists, created filters, search),
idempotency, events, clock, payments, billing (subscriptions, invoices, renewals, dunning),
checkout, delivery (to SQS), faults, api (the routes), control (/_control/), server (HTTP).

Run it standalone: python -m devstack.local_stripe --port 12111
"""




