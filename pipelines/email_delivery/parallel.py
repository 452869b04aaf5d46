"""Verification and parsing in worker processes, overlapped with receiving and writing.

RSA verification and JSON parsing are most of the CPU per notification and hold the GIL,
so they run in a process pool (the worker side is verify_worker.py). PooledIngestor, the
ses-notifications consumer with a pool, hands each received message to the pool as it arrives
(the kit's on_receive hook); by the time the drain flushes a batch, most of it is verified. The
main process then only assembles, confirms subscriptions and commits, so commit-before-delete
holds.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING

from pipelines.common.counters import Counters
from pipelines.common.queue_message import QueueMessage
from pipelines.email_delivery import event_batch, verify_worker
from pipelines.email_delivery.examine import Examined
from pipelines.email_delivery.ingest import Ingestor, PreparedNotifications

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
    """`submit` messages as they arrive; `prepare` a batch of them (in any order) when it is flushed."""

    def __init__(self, ingestor: Ingestor, workers: int, chunk: int = 500):
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
        for future in [self._pool.submit(verify_worker.ready) for _ in range(workers)]:
            future.result()
        self._pending: list[QueueMessage] = []
        self._futures: dict[str, Future | None] = {}   # sqs_message_id -> its chunk's future
        self._chunks: dict[int, _Chunk] = {}     # id(future) -> result, while any of its messages is pending

    def submit(self, messages: Sequence[QueueMessage]) -> None:
        # A message received again before its batch is prepared (its visibility timeout ran out)
        # has the same body: the copy already on its way is used, and its chunk is not orphaned.
        for m in messages:
            if m.sqs_message_id not in self._futures:
                self._futures[m.sqs_message_id] = None  # its chunk's future once sent
                self._pending.append(m)
        if len(self._pending) >= self.chunk:
            self._send()

    def _send(self) -> None:
        if not self._pending:
            return
        chunk, self._pending = self._pending, []
        future = self._pool.submit(verify_worker.examine_chunk, [(m.sqs_message_id, m.body, m.received_at) for m in chunk])
        for m in chunk:
            self._futures[m.sqs_message_id] = future

    def prepare(self, batch: Sequence[QueueMessage]) -> PreparedNotifications:
        began = time.perf_counter()
        waited = 0.0   # blocked on the workers: the verify phase as the drain thread sees it
        missing = [m for m in batch if m.sqs_message_id not in self._futures]
        if missing:
            self.submit(missing)
        self._send()
        examined: list[Examined] = []
        slices: list[list] = []  # [table, start, length], contiguous runs merged
        for m in batch:
            future = self._futures.pop(m.sqs_message_id)
            chunk = self._chunks.get(id(future))
            if chunk is None:
                t = time.perf_counter()
                result = future.result()
                waited += time.perf_counter() - t
                chunk = self._chunks[id(future)] = _Chunk(result)
            ex, offset = chunk.examined.pop(m.sqs_message_id)
            if not chunk.examined:
                del self._chunks[id(future)]
            examined.append(ex)
            if ex.n_events:
                last = slices[-1] if slices else None
                if last is not None and last[0] is chunk.events and last[1] + last[2] == offset:
                    last[2] += ex.n_events
                else:
                    slices.append([chunk.events, offset, ex.n_events])
        events = event_batch.concat(table.slice(start, length) for table, start, length in slices)
        prepared = self.ingestor.assemble(list(batch), examined, events)
        prepared.phases["verify_ms"] += waited * 1000
        prepared.phases["assemble_ms"] += (time.perf_counter() - began - waited) * 1000
        return prepared

    def forget(self, batch: Sequence[QueueMessage]) -> None:
        """Drop what the pool holds for these messages (after a chunk failed in a worker)."""
        for m in batch:
            future = self._futures.pop(m.sqs_message_id, None)
            if future is not None:
                self._chunks.pop(id(future), None)

    def worker_pids(self) -> list[int]:
        return [p.pid for p in (self._pool._processes or {}).values()]

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> PreparePool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class PooledIngestor:
    """The ses-notifications consumer, verifying in `workers` processes. Should the pool break (a
    worker killed), it verifies inline for the rest of the run rather than refuse good messages.
    Should a chunk fail in a worker (one message raised), the batch is examined here instead, so
    the good messages that shared the chunk are not refused with it; a message that raises here
    too is the kit's to quarantine."""

    def __init__(self, ingestor: Ingestor, workers: int, chunk: int = 500):
        self.ingestor = ingestor
        self.source = ingestor.source
        self.pool: PreparePool | None = PreparePool(ingestor, workers, chunk)

    def on_receive(self, messages: list[QueueMessage]) -> None:
        if self.pool is not None:
            self.pool.submit(messages)

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

    def __enter__(self) -> PooledIngestor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
