"""Helpers for tests and benchmarks: a small template set and a recording transport."""

from __future__ import annotations

import threading
from pathlib import Path

from pipelines.email.catalogue import KindSpec, parse_window
from resources.outgoing_email import OutgoingEmail, PermanentSendError, TransientSendError

BASE_HTML = """<!doctype html>
<html><head><meta charset="utf-8"><title>{{ site_name }}</title>
<style>
body { font-family: Arial, sans-serif; color: #222; }
.box { padding: 16px; border: 1px solid #ddd; }
a.button { background: #0066cc; color: #ffffff; padding: 8px 12px; }
.footer { color: #888888; font-size: 12px; }
</style></head>
<body><div class="box"><h1>{{ site_name }}</h1>
{% block content %}{% endblock %}
<p class="footer">You get this email because you have an account at <a href="{{ site_url }}">{{ site_name }}</a>.</p>
</div></body></html>
"""
BASE_TXT = """{% block content %}{% endblock %}

--
You get this email because you have an account at {{ site_name }} ({{ site_url }}).
"""
KINDS = {
    "password-reset": (
        "[{{ site_name }}] Password reset for {{ username }}",
        "Hi {{ recipient_name or username }},\n\nReset your password within {{ n_hours }} hours:\n"
        "{{ site_url }}/account/reset-password/?token={{ token }}\n",
        "<p>Hi {{ recipient_name or username }},</p><p>Reset your password within {{ n_hours }} hours:</p>"
        '<p><a class="button" href="{{ site_url }}/account/reset-password/?token={{ token }}">Reset</a></p>',
    ),
    "two-factor-added": (
        "[{{ site_name }}] Two-factor method added",
        "{{ username }} added a {{ method }} method.{% if note is defined and note %} Note: {{ note }}{% endif %}\n",
        "<p>{{ username }} added a <b>{{ method }}</b> method.</p>"
        "{% if note is defined and note %}<p>Note: {{ note }}</p>{% endif %}"
        "{% if method == 'webauthn' %}<p>Security key.</p>{% endif %}",
    ),
    "text-only": (
        "Hello {{ username }}\n   on two lines",
        "Plain {{ username }}\n",
        None,
    ),
}


def sample_kinds() -> dict[str, KindSpec]:
    return {
        "password-reset": KindSpec("password-reset", False, None, ("n_hours", "token", "username"), (),
                                   frozenset({"token"})),
        "two-factor-added": KindSpec("two-factor-added", False, parse_window("1h"), ("method", "username"),
                                     ("note",), frozenset()),
        "text-only": KindSpec("text-only", True, None, ("username",), (), frozenset()),
    }


def write_sample_templates(root: str | Path) -> Path:
    root = Path(root)
    base = root / "email" / "_base"
    base.mkdir(parents=True, exist_ok=True)
    (base / "body.html").write_text(BASE_HTML, encoding="utf-8")
    (base / "body.txt").write_text(BASE_TXT, encoding="utf-8")
    for kind, (subject, text, html) in KINDS.items():
        d = root / "email" / kind
        d.mkdir(parents=True, exist_ok=True)
        (d / "subject.txt").write_text(subject, encoding="utf-8")
        (d / "body.txt").write_text('{% extends "email/_base/body.txt" %}{% block content %}' + text
                                    + "{% endblock %}", encoding="utf-8")
        if html:
            (d / "body.html").write_text('{% extends "email/_base/body.html" %}{% block content %}' + html
                                         + "{% endblock %}", encoding="utf-8")
    return root


class RecordingTransport:
    """Keeps every message; fails by recipient local part like the devstack SMTP sink:
    `smtp-<code>-<n>@x` fails <n> times with <code> then accepts, `smtp-550@x` always fails."""

    def __init__(self, rate: float | None = None):
        self.sent: list[OutgoingEmail] = []
        self.attempts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._rate = rate

    def max_send_rate(self) -> float | None:
        return self._rate

    def send(self, email: OutgoingEmail) -> str:
        local = email.recipient.split("@", 1)[0]
        with self._lock:
            n = self.attempts[email.recipient] = self.attempts.get(email.recipient, 0) + 1
        parts = local.split("-")
        if parts[0] == "smtp" and len(parts) >= 2 and parts[1].isdigit():
            code = int(parts[1])
            limit = int(parts[2]) if len(parts) > 2 and parts[2].isdigit() else None
            if limit is None or n <= limit:
                err = TransientSendError if 400 <= code < 500 else PermanentSendError
                raise err(f"SMTP {code}: injected")
        with self._lock:
            self.sent.append(email)
            return f"rec-{len(self.sent)}"


def process(conn, consumer, messages):
    """One batch through the consumer kit on a connection the test holds (prepare, commit with
    the quarantine rows, after_commit); returns the kit's counters."""
    from pipelines.common.consumer import process_batch
    from pipelines.store.store import Store

    return process_batch(Store.over(conn), consumer, list(messages))


class BatchDriver:
    """Feeds batches to a consumer the way run_consumer does, without a queue; `stats` adds up
    the kit's counters. Each batch opens and closes its own connection."""

    def __init__(self, connect, consumer):
        from pipelines.common.counters import Counters
        from pipelines.store.store import Store

        self.consumer = consumer
        self.store = Store(connect, hold_seconds=0)
        self.stats = Counters()

    def handle(self, batch):
        from pipelines.common.consumer import process_batch

        try:
            self.stats.update(process_batch(self.store, self.consumer, list(batch)))
        finally:
            self.store.close()
