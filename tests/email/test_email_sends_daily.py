"""email_sends_daily: per day and kind counts, and checks that fail when they should."""

import dagster as dg

from pipelines.email.assets import email_sends_daily
from pipelines.schema import database
from pipelines.store_resource import MailroomStore

ROWS = [
    # request, to, kind, status, skip_reason, created (hours ago)
    ("r1", "a@x", "password-reset", "sent", None, 0),
    ("r2", "b@x", "password-reset", "delivered", None, 0),
    ("r3", "c@x", "password-reset", "bounced", None, 0),
    ("r4", "d@x", "password-reset", "skipped", "unverified", 0),
    ("r5", "e@x", "password-reset", "skipped", "repeat-window", 0),
    ("r6", "(no address #0)", "two-factor-added", "skipped", "no-address", 0),
    ("r7", "g@x", "two-factor-added", "skipped", "suppressed", 0),
    ("r8", "h@x", "two-factor-added", "sent", None, 0),
    ("r9", "i@x", "two-factor-added", "sent", None, 48),
]


def seed(db, rows):
    with db.connect() as c:
        c.executemany("INSERT INTO email_messages (request_id, to_address, kind, status, skip_reason, created_at) "
                      "VALUES (?, ?, ?, ?, ?, now() - to_hours(CAST(? AS BIGINT)))", rows)


def materialize(db):
    result = dg.materialize([email_sends_daily], resources={"store": MailroomStore(duckdb_path=db.path)}, raise_on_error=False)
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    return result, checks


def test_counts_per_day_and_kind(tmp_path):
    db = database(str(tmp_path / "d.duckdb"))
    seed(db, ROWS)
    result, checks = materialize(db)
    assert result.success and all(c.passed for c in checks.values())
    with db.connect() as c:
        got = c.execute("SELECT kind, sent, skipped, skipped_no_address, skipped_unverified, skipped_suppressed, "
                        "skipped_repeat_window, failed, pending FROM email_sends_daily "
                        "WHERE day = CAST(timezone('UTC', now()) AS DATE) ORDER BY kind").fetchall()
        days = c.execute("SELECT count(DISTINCT day) FROM email_sends_daily").fetchone()[0]
    assert got == [("password-reset", 3, 2, 0, 1, 0, 1, 0, 0), ("two-factor-added", 1, 2, 1, 0, 1, 0, 0, 0)]
    assert days == 2
    # materializing twice gives the same table
    materialize(db)
    with db.connect() as c:
        assert c.execute("SELECT sum(sent) FROM email_sends_daily").fetchone()[0] == 5


def test_checks_fail_on_stuck_pending_and_high_failure_rate(tmp_path):
    db = database(str(tmp_path / "d.duckdb"))
    seed(db, ROWS + [("r10", "j@x", "password-reset", "pending", None, 2)]
         + [(f"f{i}", "k@x", "password-reset", "failed", None, 0) for i in range(3)])
    result, checks = materialize(db)
    assert checks["email_sends_daily_matches_ledger"].passed
    assert not checks["email_no_stuck_pending"].passed
    assert checks["email_no_stuck_pending"].metadata["stuck_pending"].value == 1
    assert not checks["email_failure_rate_today"].passed


def test_ledger_check_fails_on_unknown_skip_reason(tmp_path):
    db = database(str(tmp_path / "d.duckdb"))
    seed(db, ROWS + [("r11", "z@x", "password-reset", "skipped", "mystery", 0)])
    result, checks = materialize(db)
    assert not checks["email_sends_daily_matches_ledger"].passed
