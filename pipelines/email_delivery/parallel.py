"""Verification and parsing in worker processes, overlapped with receiving, applying and writing.

RSA verification and JSON parsing are most of the CPU per notification and hold the GIL,
so they run in a process pool (the worker side is verify_worker.py). PooledSesNotificationConsumer, the
ses-notifications consumer with a pool, hands each received message to the pool as it arrives
(the kit's on_receive hook, called from the drain's receiver threads): the workers verify the
next batch while the drain thread applies, writes and commits this one, and by the time the
next batch is flushed most of it is verified. The drain thread alone assembles, confirms
subscriptions and commits, one batch after the other, so commit-before-delete and the order of
commits hold.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING

from pipelines.common.consumer import QueueConsumer
from pipelines.common.counters import Counters
from pipelines.common.queue_message import QueueMessage
from pipelines.email_delivery import event_batch, verify_worker
from pipelines.email_delivery.examine import Examined
from pipelines.email_delivery.consumer import PreparedNotifications, SesNotificationConsumer

if TYPE_CHECKING:
    import duckdb

log = logging.getLogger(__name__)


def auto_workers() -> int:
    """One worker per CPU (at most 4); inline on a single CPU. On the 2-CPU benchmark machine two
    workers beat inline when the CPUs are free, and lose when other processes load them."""
    cpus = os.cpu_count() or 1
    return 0 if cpus < 2 else min(4, cpus)


class _Chunk:
    """A worker's result for consecutive messages: where each message's events start in its table."""

    def __init__(self, result: tuple[list[tuple], list[list]]):
        rows, columns = result
        self.events = event_batch.from_columns(columns)
        self.examined: dict[str, tuple[Examined, int]] = {}
        offset = 0
        for t in rows:
            self.examined[t[0]] = (Examined(*t), offset)
            offset += t[1]


class PreparePool:
    """`submit` messages as they arrive; `prepare` a batch of them (in any order) when it is flushed.

    `submit` comes from the drain's receiver threads while `prepare` runs in the drain thread (for
    an earlier batch, or this one): the bookkeeping is under a lock, never held while waiting for
    a worker."""

    def __init__(self, ingestor: SesNotificationConsumer, workers: int, chunk: int = 500):
        self.ingestor = ingestor
        self.chunk = chunk
        v = ingestor.verifier
        self._pool = ProcessPoolExecutor(
            max_workers=workers, mp_context=multiprocessing.get_context("spawn"), initializer=verify_worker.init,
            initargs=(sorted(v.topics), str(v.certs.cert_dir) if v.certs.cert_dir else None, v.max_age_seconds,
                      ingestor.accept_raw, os.getpid()))
        # The executor spawns workers lazily, one per submit that finds none idle, and a spawned
        # worker takes ~1 s to import: started on demand, the second worker joined a 20,000-
        # notification run halfway through. Start them all now and wait until each is ready.
        # So they are children of the thread that builds the pool (the run's), never of a receiver
        # thread, which matters: their parent-death signal follows the thread that forked them.
        for future in [self._pool.submit(verify_worker.ready) for _ in range(workers)]:
            future.result()
        self._lock = threading.Lock()
        self._pending: list[QueueMessage] = []
        self._futures: dict[str, Future | None] = {}   # sqs_message_id -> its chunk's future (None: not sent yet)
        self._waiting: Counter[Future] = Counter()     # a chunk's messages in _futures
        self._chunks: dict[Future, _Chunk] = {}       # results of chunks with messages still to prepare

    def submit(self, messages: Sequence[QueueMessage]) -> None:
        # A message received again before its batch is prepared (its visibility timeout ran out)
        # has the same body: the copy already on its way is used, and its chunk is not orphaned.
        with self._lock:
            self._add(messages)
            if len(self._pending) >= self.chunk:
                self._send()

    def _add(self, messages: Sequence[QueueMessage]) -> None:
        for m in messages:
            if m.sqs_message_id not in self._futures:
                self._futures[m.sqs_message_id] = None
                self._pending.append(m)

    def _send(self) -> None:
        """Hand the pending messages to a worker (under the lock). Should the pool refuse (broken,
        shut down), they stay pending and the error goes to the caller."""
        if not self._pending:
            return
        future = self._pool.submit(verify_worker.examine_chunk,
                                   [(m.sqs_message_id, m.body, m.received_at) for m in self._pending])
        for m in self._pending:
            self._futures[m.sqs_message_id] = future
        self._waiting[future] = len(self._pending)
        self._pending = []

    def _take(self, sqs_message_id: str) -> Future | None:
        future = self._futures.pop(sqs_message_id, None)
        if future is not None:
            self._waiting[future] -= 1
            if not self._waiting[future]:
                del self._waiting[future]
        return future

    def prepare(self, batch: Sequence[QueueMessage]) -> PreparedNotifications:
        """Runs in the drain thread, while receiver threads may `submit` the next batch."""
        began = time.perf_counter()
        waited = 0.0   # blocked on the workers: the verify phase as the drain thread sees it
        with self._lock:
            self._add(batch)   # e.g. received again after its first copy was prepared
            self._send()
            futures = [self._take(m.sqs_message_id) for m in batch]
        examined: list[Examined] = []
        slices: list[list] = []  # [table, start, length], contiguous runs merged
        try:
            for m, future in zip(batch, futures):
                chunk = self._chunks.get(future)
                if chunk is None:
                    t = time.perf_counter()
                    result = future.result()
                    waited += time.perf_counter() - t
                    chunk = self._chunks[future] = _Chunk(result)
                ex, offset = chunk.examined[m.sqs_message_id]
                examined.append(ex)
                if ex.n_events:
                    last = slices[-1] if slices else None
                    if last is not None and last[0] is chunk.events and last[1] + last[2] == offset:
                        last[2] += ex.n_events
                    else:
                        slices.append([chunk.events, offset, ex.n_events])
        finally:
            self._drop_finished_chunks()
        events = event_batch.concat(table.slice(start, length) for table, start, length in slices)
        prepared = self.ingestor.assemble(list(batch), examined, events)
        prepared.phases["verify_ms"] += waited * 1000
        prepared.phases["assemble_ms"] += (time.perf_counter() - began - waited) * 1000
        return prepared

    def _drop_finished_chunks(self) -> None:
        with self._lock:
            for future in [f for f in self._chunks if f not in self._waiting]:
                del self._chunks[future]

    def forget(self, batch: Sequence[QueueMessage]) -> None:
        """Drop what the pool holds for these messages (after a chunk failed in a worker): the
        batch is examined inline instead. Other batches' messages in the failed chunk find the
        same error when their turn comes, and are examined inline too."""
        with self._lock:
            for m in batch:
                self._take(m.sqs_message_id)
            ids = {m.sqs_message_id for m in batch}
            self._pending = [p for p in self._pending if p.sqs_message_id not in ids]
        self._drop_finished_chunks()

    def worker_pids(self) -> list[int]:
        return [p.pid for p in (self._pool._processes or {}).values()]

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> PreparePool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class PooledSesNotificationConsumer(QueueConsumer):
    """The ses-notifications consumer, verifying in `workers` processes. Should the pool break (a
    worker killed), it verifies inline for the rest of the run rather than refuse good messages.
    Should a chunk fail in a worker (one message raised), the batch is examined here instead, so
    the good messages that shared the chunk are not refused with it; a message that raises here
    too is the kit's to quarantine."""

    def __init__(self, ingestor: SesNotificationConsumer, workers: int, chunk: int = 500):
        self.ingestor = ingestor
        self.source = ingestor.source
        self.redaction = ingestor.redaction
        self.pool: PreparePool | None = PreparePool(ingestor, workers, chunk)
        self._refused = False

    def on_receive(self, messages: list[QueueMessage]) -> None:
        """From a receiver thread. Never raises: a pool that refuses work (broken, or closed by
        the drain thread meanwhile) leaves these messages to `prepare`, which verifies what the
        pool does not hold."""
        pool = self.pool
        if pool is None:
            return
        try:
            pool.submit(messages)
        except Exception as exc:  # noqa: BLE001 - see the docstring
            if not self._refused:
                self._refused = True
                log.warning(f"the verify pool refused received messages ({type(exc).__name__}); "
                            "they are verified when their batch is prepared")

    def prepare(self, messages: list[QueueMessage]) -> PreparedNotifications:
        if self.pool is not None:
            try:
                return self.pool.prepare(messages)
            except BrokenProcessPool:
                log.error("the verify pool broke; verifying inline for the rest of the run")
                self.close()
            except Exception as exc:  # noqa: BLE001 - see the class docstring
                log.error(f"a verify worker failed on this batch ({type(exc).__name__}); examining it inline")
                self.pool.forget(messages)
        return self.ingestor.prepare(messages)

    def commit(self, conn: duckdb.DuckDBPyConnection, prepared: PreparedNotifications) -> Counters:
        return self.ingestor.commit(conn, prepared)

    def worker_pids(self) -> list[int]:
        return self.pool.worker_pids() if self.pool is not None else []

    def close(self) -> None:
        if self.pool is not None:
            pool, self.pool = self.pool, None
            pool.close()

    def __enter__(self) -> PooledSesNotificationConsumer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
