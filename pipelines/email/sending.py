"""Sending: a run-wide rate limiter, a thread pool, and retries with backoff.

TransientSendError (throttling, SMTP 4xx, dropped connections) is retried with
exponential backoff and jitter; PermanentSendError (SMTP 5xx, SES MessageRejected) is
recorded as failed at once. Every attempt takes a slot from the rate limiter.

`Sender.stop()` (a drain asked to stop) wakes every thread waiting on the rate or a backoff:
a message not yet handed to the transport comes back as UNSENT; calls already made finish.
`accepted_at` is when the transport accepted the message: the ledger's sent_at.
"""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone

from pipelines.email.ledger import MessageStatus as S
from pipelines.email.transport import EmailTransport
from resources.outgoing_email import OutgoingEmail, PermanentSendError, TransientSendError

# Aim a little under the provider's rate, and cap hard a little under it too, so that
# network and scheduling jitter never put one send too many into a one-second window.
RATE_HEADROOM = 0.98
CAP_HEADROOM = 0.99


class RateLimiter:
    """Shared by all threads of a run: evenly spaced slots at `rate` per second, plus a hard cap
    of `cap_per_second` sends in any one-second window.

    A thread that wakes late (CPU contention) or a pool that fell behind may catch up on at
    most `max_lag` seconds of missed slots; the hard cap still holds while it does.
    """

    def __init__(self, rate: float | None, cap_per_second: float | None = None, max_lag: float = 0.1,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep):
        self.interval = 1.0 / rate if rate and rate > 0 else 0.0
        self.cap = max(1, int(cap_per_second)) if cap_per_second and cap_per_second > 0 else None
        self.max_lag = max_lag
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._cap_lock = threading.Lock()
        self._next = float("-inf")
        self._recent: deque[float] = deque()
        self.releases: list[float] | None = None   # set to a list to record release times (benchmarks)
        self.stopped: Callable[[], bool] = lambda: False   # a stopping sender returns at once (no send follows)

    def acquire(self) -> float:
        """Block until this caller may send; returns the release time."""
        if self.interval:
            with self._lock:
                now = self._clock()
                slot = now if self._next == float("-inf") else max(now - self.max_lag, self._next)
                self._next = slot + self.interval
            delay = slot - self._clock()
            if delay > 0:
                self._sleep(delay)
        if self.cap is None:
            now = self._clock()
            if self.releases is not None:
                with self._cap_lock:
                    self.releases.append(now)
            return now
        while not self.stopped():
            with self._cap_lock:
                now = self._clock()
                while self._recent and self._recent[0] <= now - 1.0:
                    self._recent.popleft()
                if len(self._recent) < self.cap:
                    self._recent.append(now)
                    if self.releases is not None:
                        self.releases.append(now)
                    return now
                wait = self._recent[0] + 1.0 - now
            self._sleep(max(wait, 1e-4))
        return self._clock()


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    base_delay: float = 0.2
    max_delay: float = 5.0

    def delay(self, attempt: int) -> float:
        """Full-jitter exponential backoff before attempt `attempt + 1`."""
        cap = min(self.max_delay, self.base_delay * (2 ** (attempt - 1)))
        return cap / 2 + random.random() * cap / 2


UNSENT = "unsent"   # never handed to the transport: the run stopped first (not a ledger status)


@dataclass(frozen=True)
class SendResult:
    key: object
    status: str          # S.SENT, S.FAILED, or UNSENT
    message_id: str | None
    error: str | None
    attempts: int
    seconds: float
    accepted_at: datetime | None = None   # when the transport accepted it (status sent)


def send_one(transport: EmailTransport, email: OutgoingEmail, limiter: RateLimiter, policy: RetryPolicy,
             key: object = None, sleep: Callable[[float], None] = time.sleep,
             stopped: Callable[[], bool] = lambda: False) -> SendResult:
    started = time.perf_counter()
    attempt = 0
    while True:
        attempt += 1
        limiter.acquire()
        if stopped():
            return SendResult(key, UNSENT, None, None, attempt - 1, time.perf_counter() - started)
        try:
            message_id = transport.send(email)
        except PermanentSendError as exc:
            return SendResult(key, S.FAILED, None, f"permanent: {exc}", attempt, time.perf_counter() - started)
        except TransientSendError as exc:
            if attempt >= policy.max_attempts:
                return SendResult(key, S.FAILED, None, f"transient, gave up after {attempt} attempts: {exc}",
                                  attempt, time.perf_counter() - started)
            sleep(policy.delay(attempt))
            if stopped():   # refused for now and not retried: not sent
                return SendResult(key, UNSENT, None, None, attempt, time.perf_counter() - started)
            continue
        except Exception as exc:  # noqa: BLE001 - an unexpected transport bug fails this message, not the run
            return SendResult(key, S.FAILED, None, f"error: {type(exc).__name__}: {exc}", attempt,
                              time.perf_counter() - started)
        return SendResult(key, S.SENT, message_id, None, attempt, time.perf_counter() - started,
                          datetime.now(timezone.utc))


class Sender:
    """Sends through one transport with `concurrency` threads, all under one rate limiter."""

    def __init__(self, transport: EmailTransport, *, concurrency: int = 8, rate: float | None = None,
                 policy: RetryPolicy | None = None):
        self.transport = transport
        self._stop = threading.Event()
        self.limiter = RateLimiter(rate * RATE_HEADROOM if rate else None,
                                   cap_per_second=rate * CAP_HEADROOM if rate else None, sleep=self._sleep)
        self.limiter.stopped = self._stop.is_set
        self.policy = policy or RetryPolicy()
        self.concurrency = max(1, concurrency)
        self._pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="email-send")

    def _sleep(self, seconds: float) -> None:
        self._stop.wait(seconds)

    def stop(self) -> None:
        """Hand nothing more to the transport; threads waiting on the rate or a backoff return UNSENT."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def submit_all(self, items: Iterable[tuple[object, OutgoingEmail]]) -> list[Future[SendResult]]:
        return [self._pool.submit(send_one, self.transport, email, self.limiter, self.policy, key,
                                  self._sleep, self._stop.is_set)
                for key, email in items]

    def send_all(self, items: Iterable[tuple[object, OutgoingEmail]]) -> Iterator[SendResult]:
        """Results in submission order."""
        for f in self.submit_all(items):
            yield f.result()

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        close = getattr(self.transport, "close", None)
        if callable(close):
            close()

    def __enter__(self) -> Sender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
