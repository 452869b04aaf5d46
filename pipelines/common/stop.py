"""Clean stops: Ctrl-C, SIGTERM or Terminate in the Dagster UI ask a drain to stop, not to die.

`StopRequest` is what the drain loop and a consumer's side effects look at: once requested, the
drain takes no new messages, the batch in hand is either finished (its commit and the sends
already handed to the transport, each outcome recorded) or abandoned before its commit; what
was not committed stays on the queue for the next run. Callbacks let a consumer wake threads
that are waiting on a send rate.

`stop_on_signals()` turns SIGINT and SIGTERM into a StopRequest for the length of a run (Dagster
sends SIGINT to the run's process when it is terminated from the UI); a second signal while
stopping is ignored, so a stop is never cut short half-way through recording what was sent.
"""

from __future__ import annotations

import signal
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class Stopped(Exception):
    """Raised inside a batch once a stop was requested: the batch is not deleted from SQS.
    `counters`: what the batch did before it stopped (sent, failed, released, ...)."""

    def __init__(self, counters: Counter[str] | None = None):
        super().__init__("stopped")
        self.counters: Counter[str] = counters if counters is not None else Counter()


class StopRequest:
    def __init__(self) -> None:
        self._event = threading.Event()
        self._callbacks: list[Callable[[], None]] = []
        self.reason: str | None = None

    @property
    def requested(self) -> bool:
        return self._event.is_set()

    def request(self, reason: str = "stop requested") -> None:
        if self._event.is_set():
            return
        self.reason = reason
        self._event.set()
        for callback in list(self._callbacks):
            callback()

    def on_request(self, callback: Callable[[], None]) -> None:
        self._callbacks.append(callback)
        if self.requested:
            callback()

    def wait(self, seconds: float) -> bool:
        """Sleep up to `seconds`, waking early on a stop; True if a stop was requested."""
        return self._event.wait(seconds)


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextmanager
def stop_on_signals(stop: StopRequest | None = None) -> Iterator[StopRequest]:
    """SIGINT / SIGTERM request `stop` instead of raising, until the block ends (main thread only;
    elsewhere signals cannot be caught and the block just yields the request)."""
    stop = stop or StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {sig: signal.getsignal(sig) for sig in STOP_SIGNALS}

    def handler(signo: int, _frame: object) -> None:
        stop.request(f"received {signal.Signals(signo).name}")

    for sig in STOP_SIGNALS:
        signal.signal(sig, handler)
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
