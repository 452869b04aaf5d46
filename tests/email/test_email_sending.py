"""Rate limiter, retries with backoff, and the SMTP transport against the real sink."""

import threading
import time

import pytest

from pipelines.email.sending import RATE_HEADROOM, RateLimiter, RetryPolicy, Sender, send_one
from resources.outgoing_email import OutgoingEmail, PermanentSendError, TransientSendError
from resources.smtp import SMTPSenderResource


class FakeClock:
    def __init__(self):
        self.t = 0.0

    def now(self):
        return self.t

    def sleep(self, d):
        self.t += d


def windows_ok(stamps, cap):
    j = 0
    for i, s in enumerate(stamps):
        while stamps[j] <= s - 1.0:
            j += 1
        if i - j + 1 > cap:
            return False
    return True


def test_rate_limiter_spaces_slots_evenly():
    clock = FakeClock()
    limiter = RateLimiter(200 * RATE_HEADROOM, cap_per_second=200, clock=clock.now, sleep=clock.sleep)
    slots = [limiter.acquire() for _ in range(2000)]
    assert slots[-1] - slots[0] == pytest.approx(1999 / (200 * RATE_HEADROOM))
    assert 9.5 <= slots[-1] - slots[0] + 1 / 200 <= 10.5
    assert windows_ok(slots, 200)


def test_rate_limiter_catches_up_a_little_but_never_breaks_the_cap():
    clock = FakeClock()
    limiter = RateLimiter(100, cap_per_second=100, max_lag=0.25, clock=clock.now, sleep=clock.sleep)
    stamps = [limiter.acquire() for _ in range(50)]
    clock.t += 5.0                      # the senders stalled (all threads busy)
    stamps += [limiter.acquire() for _ in range(300)]
    assert windows_ok(stamps, 100)
    after = stamps[50:]
    assert sum(1 for s in after if s < after[0] + 0.005) == 26   # 0.25 s of missed slots, at once
    assert after[-1] - after[0] == pytest.approx(299 / 100 - 0.25, abs=0.02)


def test_sender_caps_under_the_provider_rate():
    with Sender(Flaky(0), concurrency=16, rate=200) as s:
        s.limiter.releases = []
        list(s.send_all((i, EMAIL) for i in range(600)))
        assert windows_ok(s.limiter.releases, 198)
        # The cap: 600 sends at 200/s cannot take less than ~3 s. How close to 3 s it stays is a speed
        # figure, measured by the rate phase of bench/email_dispatch.py (10 s ± 5% for 2,000 at 200/s),
        # not here, where a loaded CI machine's scheduling decides it.
        assert s.limiter.releases[-1] - s.limiter.releases[0] >= 2.9


def test_cap_alone_holds_a_burst():
    clock = FakeClock()
    limiter = RateLimiter(None, cap_per_second=50, clock=clock.now, sleep=clock.sleep)
    stamps = [limiter.acquire() for _ in range(500)]
    assert windows_ok(stamps, 50) and stamps[-1] >= 9.0


def test_rate_limiter_is_shared_across_threads():
    limiter = RateLimiter(500)
    stamps, lock = [], threading.Lock()

    def work():
        for _ in range(50):
            limiter.acquire()
            with lock:
                stamps.append(time.monotonic())

    threads = [threading.Thread(target=work) for _ in range(8)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.monotonic() - started
    assert 0.75 <= took <= 1.3          # 400 sends at 500/s
    stamps.sort()
    assert all(b - a > -1e-9 for a, b in zip(stamps, stamps[1:]))


def test_unlimited_rate_does_not_wait():
    limiter = RateLimiter(None)
    started = time.monotonic()
    for _ in range(10000):
        limiter.acquire()
    assert time.monotonic() - started < 0.5


class Flaky:
    def __init__(self, failures, exc=TransientSendError):
        self.failures, self.exc, self.calls = failures, exc, 0

    def send(self, email):
        self.calls += 1
        if self.calls <= self.failures:
            raise self.exc(f"failure {self.calls}")
        return "mid-1"

    def max_send_rate(self):
        return None


EMAIL = OutgoingEmail("f@x.org", "t@x.org", b"Subject: x\r\n\r\nbody\r\n", "k")


def test_transient_failures_are_retried_with_backoff():
    sleeps = []
    r = send_one(Flaky(3), EMAIL, RateLimiter(None), RetryPolicy(max_attempts=5, base_delay=0.1, max_delay=1),
                 sleep=sleeps.append)
    assert (r.status, r.message_id, r.attempts) == ("sent", "mid-1", 4)
    assert len(sleeps) == 3 and sleeps[0] < sleeps[2] and all(s <= 1 for s in sleeps)


def test_transient_failures_give_up_after_max_attempts():
    r = send_one(Flaky(99), EMAIL, RateLimiter(None), RetryPolicy(max_attempts=3, base_delay=0), sleep=lambda s: None)
    assert (r.status, r.attempts) == ("failed", 3) and "gave up after 3 attempts" in r.error


def test_permanent_failure_is_not_retried():
    t = Flaky(1, PermanentSendError)
    r = send_one(t, EMAIL, RateLimiter(None), RetryPolicy(), sleep=lambda s: None)
    assert (r.status, r.attempts, t.calls) == ("failed", 1, 1) and r.error.startswith("permanent:")


def test_sender_keeps_submission_order():
    class Slow:
        def send(self, email):
            time.sleep(0.01 if email.recipient.startswith("a") else 0)
            return email.recipient

        def max_send_rate(self):
            return None

    with Sender(Slow(), concurrency=4) as s:
        items = [(i, OutgoingEmail("f@x", ("a" if i % 2 else "b") + f"{i}@x", b"", "k")) for i in range(20)]
        assert [r.key for r in s.send_all(items)] == list(range(20))


# ---- real SMTP sink ----------------------------------------------------------------------------

def raw(to):
    return f"From: f@mailroom.test\r\nTo: {to}\r\nSubject: t\r\nMessage-ID: <id-{to}>\r\n\r\nhello\r\n".encode()


def test_smtp_421_and_451_are_retried_550_is_failed(local_stack, stack_env):
    smtp = SMTPSenderResource(host=local_stack.smtp_host, port=local_stack.smtp_port)
    addrs = ["smtp-421-2@x.test", "smtp-451-1@x.test", "smtp-550@x.test", "fine@x.test"]
    with Sender(smtp, concurrency=2, policy=RetryPolicy(max_attempts=4, base_delay=0.01)) as s:
        results = {r.key: r for r in s.send_all(
            (a, OutgoingEmail("f@mailroom.test", a, raw(a), "k")) for a in addrs)}
    assert (results["smtp-421-2@x.test"].status, results["smtp-421-2@x.test"].attempts) == ("sent", 3)
    assert (results["smtp-451-1@x.test"].status, results["smtp-451-1@x.test"].attempts) == ("sent", 2)
    assert results["smtp-550@x.test"].status == "failed" and results["smtp-550@x.test"].attempts == 1
    assert "550" in results["smtp-550@x.test"].error
    assert results["fine@x.test"].message_id == "id-fine@x.test"
    local_stack.smtp.wait_for(3)
    got = sorted(t for m in local_stack.smtp.messages() for t in m.rcpt_tos)
    assert got == ["fine@x.test", "smtp-421-2@x.test", "smtp-451-1@x.test"]


def test_smtp_connection_drop_is_transient(local_stack, stack_env):
    smtp = SMTPSenderResource(host="127.0.0.1", port=1, timeout_seconds=2)   # nothing listens on port 1
    with pytest.raises(TransientSendError, match="SMTP connection"):
        smtp.send(OutgoingEmail("f@x.test", "t@x.test", raw("t@x.test"), "k"))


def test_ses_request_carries_configuration_set_tags_and_raw_mime():
    from botocore.stub import Stubber

    from resources.ses import SESSenderResource

    ses = SESSenderResource(region_name="us-east-1", configuration_set="mailroom", aws_access_key_id="x",
                            aws_secret_access_key="y")
    with Stubber(ses.client) as stub:
        stub.add_response("send_email", {"MessageId": "ses-1"}, {
            "FromEmailAddress": "f@mailroom.test", "Destination": {"ToAddresses": ["t@x.org"]},
            "Content": {"Raw": {"Data": EMAIL.raw}}, "ConfigurationSetName": "mailroom",
            "EmailTags": [{"Name": "kind", "Value": "password-reset"}],
        })
        stub.add_client_error("send_email", "MessageRejected", "Email address is not verified.", 400)
        stub.add_client_error("send_email", "TooManyRequestsException", "Maximum sending rate exceeded.", 429)
        e = OutgoingEmail("f@mailroom.test", "t@x.org", EMAIL.raw, "password-reset")
        assert ses.send(e) == "ses-1"
        with pytest.raises(PermanentSendError, match="MessageRejected"):
            ses.send(e)
        with pytest.raises(TransientSendError, match="TooManyRequests"):
            ses.send(e)


def test_ses_send_quota_from_moto(local_stack, stack_env):
    from resources.ses import SESSenderResource

    assert SESSenderResource(region_name="us-east-1", max_rate=200).max_send_rate() == 200
    # moto has no SESv2 GetAccount; the SES GetSendQuota fallback reports the local stack's quota
    # (devstack/moto_server.py: SES's usual production 14/s instead of moto's sandbox 1/s)
    assert SESSenderResource(region_name="us-east-1").max_send_rate() == 14.0


def test_console_transport_prints_headers_not_bodies(capsys):
    from resources.smtp import ConsoleSenderResource

    raw = b"From: f@x.org\r\nTo: t@x.org\r\nSubject: Reset\r\nMessage-ID: <m1@x>\r\n\r\nlink?token=tok-SECRET-77\r\n"
    assert ConsoleSenderResource().send(OutgoingEmail("f@x.org", "t@x.org", raw, "password-reset")) == "m1@x"
    out = capsys.readouterr().out
    assert "Subject: Reset" in out and "tok-SECRET-77" not in out
