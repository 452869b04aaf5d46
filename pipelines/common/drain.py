"""The drain loop every queue consumer shares (docs/architecture.md, "Runs are the consumers").

Receive (long poll, 10 a call) until a batch is full, or until its oldest message has been in
flight for a set share of the queue's visibility timeout; hand the batch to `handle`, which must
commit everything it needs to DuckDB (including quarantine rows) before it returns; only then
delete the batch from SQS. A crash before the delete leaves the messages on the queue; `handle`
is idempotent, so the redelivery changes nothing. Flushing by age keeps a slow queue from
redelivering messages that are still waiting in a batch (and deleting them would then fail).

Against a real SQS every call is a network round trip (10-30 ms in-region), so the calls run
concurrently with the handling and with each other:
- `receivers` threads keep receive calls in flight; they fill the next batch (up to `prefetch`
  messages ahead) while this one is prepared and committed;
- a committed batch's deletes go out as concurrent batch calls (`deleters` threads), off the
  path of the next batch;
- a batch whose handling runs long keeps its messages hidden: a keeper thread extends their
  visibility (ChangeMessageVisibilityBatch) before it runs out.
`handle` always runs in the calling thread, one batch at a time, so consumers and their DuckDB
connection see no concurrency there. `on_receive` runs in the receiver thread that got the
messages, one call at a time, before the drain thread takes them: while an earlier batch is in
`handle`, so work a consumer starts on it (the SES verify pool) overlaps that batch's apply and
commit. A queue runs this way only if it says its
calls may overlap (`supports_concurrent_calls`, e.g. SQSQueueResource: boto3 clients are
thread-safe); any other queue, or `DrainOptions.sequential()`, is drained one call at a time.

A stop request (pipelines/common/stop.py) ends the loop before its next receive: messages
received but not yet taken by `handle` are abandoned (left on the queue, redelivered after their
visibility timeout); a batch whose `handle` raises Stopped is not deleted either.
"""

from __future__ import annotations

import queue as queue_module
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace

from pipelines.common.counters import Counters
from pipelines.common.queue_message import Queue, QueueMessage
from pipelines.common.stop import Stopped, StopRequest

SQS_BATCH = 10


@dataclass(frozen=True)
class DrainOptions:
    max_messages: int = 10_000
    max_seconds: float = 300.0
    batch_size: int = 500
    wait_seconds: int = 1
    empty_polls_to_stop: int = 1
    # A batch is flushed once its oldest message has been in flight for this share of the
    # queue's visibility timeout (read from the queue when `visibility_timeout` is None).
    visibility_share: float = 0.5
    visibility_timeout: float | None = None
    # Receive calls in flight at once (bench/README.md, "Drain latency", for how it was chosen).
    receivers: int = 8
    # Messages received ahead while a batch is handled; None = one batch.
    prefetch: int | None = None
    # Delete calls in flight at once; 0 = the drain thread deletes, one call after another.
    deleters: int = 8
    # Extend the visibility of messages whose batch is still being handled when it would run out.
    extend_visibility: bool = True

    @classmethod
    def sequential(cls, **kwargs) -> DrainOptions:
        """One call at a time: receive a batch, handle it, delete it, receive the next."""
        return cls(**{"receivers": 1, "prefetch": 0, "deleters": 0, "extend_visibility": False, **kwargs})


def visibility_timeout_of(queue: Queue) -> float | None:
    """The queue's VisibilityTimeout in seconds, if the queue can tell (SQSQueueResource can)."""
    read = getattr(queue, "visibility_timeout", None)
    return float(read()) if callable(read) else None


def drain(queue: Queue, handle: Callable[[list[QueueMessage]], None], options: DrainOptions = DrainOptions(),
          *, on_receive: Callable[[list[QueueMessage]], None] | None = None,
          stop: StopRequest | None = None) -> Counters:
    """Drain up to `max_messages` or `max_seconds`, or until `stop` is requested. `on_receive` sees
    each received message as it arrives, from a receiver thread, one call at a time (a consumer that
    prepares in worker processes starts on it then, while the drain thread handles earlier batches)."""
    if not getattr(queue, "supports_concurrent_calls", False):
        options = replace(options, receivers=1, prefetch=0, deleters=0, extend_visibility=False)
    return _Drain(queue, handle, options, on_receive, stop).run()


_DONE = object()   # a receiver has stopped


@dataclass
class _Received:
    began: float       # when the receive call began: the messages were hidden no earlier
    messages: list[QueueMessage]


@dataclass
class _Failed:
    exc: BaseException


class _Drain:
    def __init__(self, queue: Queue, handle: Callable[[list[QueueMessage]], None], options: DrainOptions,
                 on_receive: Callable[[list[QueueMessage]], None] | None, stop: StopRequest | None = None):
        self.queue, self.handle, self.opts, self.on_receive = queue, handle, options, on_receive
        self.stop = stop
        self.halted = False    # a batch's handle raised Stopped
        self.stats = Counters(received=0, deleted=0, delete_failures=0, batches=0, receive_calls=0,
                              delete_calls=0, flushed_by_age=0)
        timeout = options.visibility_timeout if options.visibility_timeout is not None else visibility_timeout_of(queue)
        self.timeout = timeout if timeout else None
        self.budget = options.visibility_share * timeout if timeout else None
        prefetch = options.batch_size if options.prefetch is None else options.prefetch
        self.cap = max(1, options.batch_size + prefetch)   # messages received and not yet committed
        self.started = time.monotonic()
        # Shared with the receiver and keeper threads, under `cond`:
        self.cond = threading.Condition()
        self.reserved = 0      # messages asked for so far, against max_messages
        self.inflight = 0      # asked for or received, and not yet committed
        self.receiving = 0     # receive calls under way
        self.empty_streak = 0
        self.stopping = False
        self.hidden_until: dict[str, float] = {}   # receipt handle -> when it becomes visible again
        self.keeper_stats = Counters()
        self.on_receive_lock = threading.Lock()   # one on_receive call at a time
        # The drain thread's own:
        self.inbox: queue_module.Queue = queue_module.Queue()
        self.batch: list[QueueMessage] = []
        self.oldest = 0.0
        self.seen: set[str] = set()
        self.deletes: list[Future] = []
        self.pool: ThreadPoolExecutor | None = None

    # ---- receiver threads -------------------------------------------------------------------

    def _out_of_time(self) -> bool:
        return time.monotonic() - self.started >= self.opts.max_seconds

    def _stop_requested(self) -> bool:
        return self.halted or (self.stop is not None and self.stop.requested)

    def _receive_loop(self) -> None:
        try:
            while True:
                with self.cond:
                    # Wait for room for a full receive (fewer only for the last messages of the run,
                    # or when no other receive is under way: a partial receive can leave the batch
                    # short of full with less than a full receive's room, and it must still fill).
                    while not self.stopping and self._no_room():
                        self.cond.wait(0.5)
                    if self.stopping or self._out_of_time() or self._stop_requested():
                        return
                    want = min(SQS_BATCH, self.opts.max_messages - self.reserved, self.cap - self.inflight)
                    if want <= 0:
                        return
                    self.reserved += want
                    self.receiving += 1
                    self.inflight += want
                # A long poll never runs past the drain's time limit.
                left = self.opts.max_seconds - (time.monotonic() - self.started)
                wait = self.opts.wait_seconds if left >= self.opts.wait_seconds else max(0, int(left))
                began = time.monotonic()
                try:
                    raw = self.queue.receive(max_messages=want, wait_seconds=wait)
                except BaseException as exc:  # noqa: BLE001 - handed to the drain thread, which raises it
                    with self.cond:
                        self.receiving -= 1
                        self.reserved -= want
                        self.inflight -= want
                        self.stopping = True
                        self.cond.notify_all()
                    self.inbox.put(_Failed(exc))
                    return
                with self.cond:
                    self.receiving -= 1
                    unused = want - len(raw)
                    self.reserved -= unused
                    self.inflight -= unused
                    if self.timeout:
                        for m in raw:
                            self.hidden_until[m["ReceiptHandle"]] = began + self.timeout
                    self.empty_streak = 0 if raw else self.empty_streak + 1
                    if self.empty_streak >= self.opts.empty_polls_to_stop:
                        self.stopping = True
                    self.cond.notify_all()
                received = [QueueMessage.from_sqs(m) for m in raw]
                if received and self.on_receive is not None:
                    with self.on_receive_lock:
                        self.on_receive(received)
                self.inbox.put(_Received(began, received))
        except BaseException as exc:  # noqa: BLE001 - a receiver must never end the drain silently
            self._stop()
            self.inbox.put(_Failed(exc))
        finally:
            self.inbox.put(_DONE)

    def _no_room(self) -> bool:
        room = self.cap - self.inflight
        wanted = min(SQS_BATCH, self.cap, self.opts.max_messages - self.reserved)
        return room < wanted and (self.receiving > 0 or room <= 0)

    def _stop(self) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify_all()

    # ---- keeper thread: visibility of batches that run long ---------------------------------

    def _keep_hidden(self, done: threading.Event) -> None:
        assert self.timeout is not None
        tick = max(0.05, min(1.0, self.timeout / 10))
        margin = min(self.timeout / 2, max(self.timeout / 4, 3 * tick))
        change = self.queue.change_visibility  # type: ignore[attr-defined]
        while not done.wait(tick):
            now = time.monotonic()
            with self.cond:
                due = [h for h, until in self.hidden_until.items() if until - now < margin]
                for h in due:
                    self.hidden_until[h] = now + self.timeout
            for start in range(0, len(due), SQS_BATCH):
                chunk = due[start:start + SQS_BATCH]
                try:
                    failed = change(chunk, int(self.timeout))
                except Exception:  # noqa: BLE001 - the worst case is a redelivery, which changes nothing
                    with self.cond:
                        self.keeper_stats["visibility_errors"] += 1
                    continue
                with self.cond:
                    self.keeper_stats["visibility_calls"] += 1
                    self.keeper_stats["visibility_extended"] += len(chunk) - len(failed)

    # ---- the drain thread -------------------------------------------------------------------

    def run(self) -> Counters:
        opts = self.opts
        receivers = [threading.Thread(target=self._receive_loop, name=f"sqs-receive-{i}", daemon=True)
                     for i in range(max(1, opts.receivers))]
        keeper_done = threading.Event()
        keeper = None
        if opts.extend_visibility and self.timeout and hasattr(self.queue, "change_visibility"):
            keeper = threading.Thread(target=self._keep_hidden, args=(keeper_done,), name="sqs-visibility",
                                      daemon=True)
        if opts.deleters > 0:
            self.pool = ThreadPoolExecutor(opts.deleters, thread_name_prefix="sqs-delete")
        for t in receivers:
            t.start()
        if keeper is not None:
            keeper.start()
        try:
            live = len(receivers)
            while live:
                began = time.perf_counter()   # receive_ms: waiting for and taking received messages
                item = self._next()
                if item is None:          # nothing arrived in time: a batch may be due by age
                    self.stats["receive_ms"] += (time.perf_counter() - began) * 1000
                    if self._out_of_time():
                        self._stop()
                elif item is _DONE:
                    live -= 1
                elif isinstance(item, _Failed):
                    raise item.exc
                else:
                    self.stats["receive_calls"] += 1
                    self._take(item)
                    self.stats["receive_ms"] += (time.perf_counter() - began) * 1000
                    if len(self.batch) >= opts.batch_size:
                        self._flush()
                if self._stop_requested():
                    break
                if self._too_old():
                    self.stats["flushed_by_age"] += 1
                    self._flush()
            if self.batch and self._stop_requested():
                self.stats["abandoned"] += len(self.batch)   # never committed: left on the queue
                self._release([m.receipt_handle for m in self.batch])
                self.batch = []
            elif self.batch:
                self._flush()
            self._reap(wait=True)
            if self._stop_requested():
                self.stats["stopped"] = 1
        finally:
            self._stop()
            for t in receivers:
                t.join()
            keeper_done.set()
            if keeper is not None:
                keeper.join()
            if self.pool is not None:
                self.pool.shutdown(wait=True)
        self.stats.update(self.keeper_stats)
        return self.stats

    def _next(self) -> object | None:
        wait = 0.5
        if self.batch and self.budget is not None:
            wait = max(0.0, min(wait, self.oldest + self.budget - time.monotonic()))
        try:
            return self.inbox.get(timeout=wait)
        except queue_module.Empty:
            return None

    def _too_old(self) -> bool:
        return bool(self.batch) and self.budget is not None and time.monotonic() - self.oldest >= self.budget

    def _take(self, item: _Received) -> None:
        if not item.messages:
            return
        if not self.batch:
            self.oldest = item.began
        for msg in item.messages:
            if msg.sqs_message_id in self.seen:
                # Received again (its visibility ran out). In this batch: keep the newest handle.
                before = len(self.batch)
                dropped = [m for m in self.batch if m.sqs_message_id == msg.sqs_message_id]
                self.batch[:] = [m for m in self.batch if m.sqs_message_id != msg.sqs_message_id]
                with self.cond:
                    self.inflight -= before - len(self.batch)
                    for m in dropped:
                        self.hidden_until.pop(m.receipt_handle, None)
                    self.cond.notify_all()
                self.stats["received_again"] += 1
            self.seen.add(msg.sqs_message_id)
            self.batch.append(msg)
            self.stats["received"] += 1

    def _flush(self) -> None:
        batch, self.batch = self.batch, []
        try:
            self.handle(batch)        # committed (or it raised, and nothing is deleted)
        except Stopped:
            self.stats["stopped_in_batch"] += len(batch)
            self.halted = True        # before the release wakes a receiver
            self._stop()
            self._release([m.receipt_handle for m in batch])
            return
        self.stats["batches"] += 1
        handles = [m.receipt_handle for m in batch]
        if self.pool is None:
            self._count_deleted(len(handles), self.queue.delete(handles),
                                (len(handles) + SQS_BATCH - 1) // SQS_BATCH)
            self._release(handles)    # receiving resumes only now: one call at a time
            return
        self._release(handles)
        for start in range(0, len(handles), SQS_BATCH):
            chunk = handles[start:start + SQS_BATCH]
            future = self.pool.submit(self.queue.delete, chunk)
            future.size = len(chunk)  # type: ignore[attr-defined]
            self.deletes.append(future)
        self._reap(wait=False)

    def _release(self, handles: list[str]) -> None:
        with self.cond:
            for h in handles:
                self.hidden_until.pop(h, None)
            self.inflight -= len(handles)
            self.cond.notify_all()

    def _count_deleted(self, sent: int, failed: list[str], calls: int) -> None:
        self.stats["delete_calls"] += calls
        self.stats["deleted"] += sent - len(failed)
        self.stats["delete_failures"] += len(failed)

    def _reap(self, wait: bool) -> None:
        keep = []
        for future in self.deletes:
            if wait or future.done():
                self._count_deleted(future.size, future.result(), 1)
            else:
                keep.append(future)
        self.deletes = keep
