"""A queue in memory with the SQS resource's receive/delete: run_consumer drains it as it would
the real one, so an in-process benchmark measures the code the op runs, minus SQS."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from itertools import islice


class MemoryQueue:
    queue_name = "memory"
    supports_concurrent_calls = True

    def __init__(self, bodies: Iterable[str]):
        self._bodies = iter(bodies)
        self._received = 0
        self._lock = threading.Lock()

    def receive(self, max_messages: int = 10, wait_seconds: int = 1) -> list[dict]:
        out = []
        with self._lock:
            for body in islice(self._bodies, max_messages):
                out.append({"MessageId": f"sqs-{self._received}", "ReceiptHandle": f"rh-{self._received}",
                            "Body": body})
                self._received += 1
        return out

    def delete(self, receipt_handles: list[str]) -> list[str]:
        return []
