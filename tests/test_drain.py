"""The drain loop's ordering guarantee: commit (handle) before delete, bounded by count."""

import pytest

from pipelines.common.drain import drain


class ListQueue:
    queue_name = "q"

    def __init__(self, bodies):
        self.pending = [{"MessageId": f"m{i}", "ReceiptHandle": f"h{i}", "Body": b,
                         "Attributes": {"ApproximateReceiveCount": "1"}} for i, b in enumerate(bodies)]
        self.deleted: list[str] = []
        self.log: list[str] = []

    def receive(self, max_messages=10, wait_seconds=1):
        out, self.pending = self.pending[:max_messages], self.pending[max_messages:]
        self.log.append(f"receive:{len(out)}")
        return out

    def delete(self, handles):
        self.log.append(f"delete:{len(handles)}")
        self.deleted.extend(handles)
        return []


def test_handle_commits_before_anything_is_deleted():
    q = ListQueue([str(i) for i in range(25)])
    seen = []

    def handle(batch):
        q.log.append(f"handle:{len(batch)}")
        seen.extend(m.body for m in batch)

    stats = drain(q, handle, batch_size=20)
    assert seen == [str(i) for i in range(25)]
    assert q.log == ["receive:10", "receive:10", "handle:20", "delete:20",
                     "receive:5", "receive:0", "handle:5", "delete:5"]
    assert stats.received == stats.deleted == 25
    assert stats.receive_calls == 4 and stats.delete_calls == 3


def test_a_failing_handle_deletes_nothing():
    q = ListQueue(["a", "b"])

    def handle(batch):
        raise RuntimeError("db down")

    with pytest.raises(RuntimeError):
        drain(q, handle)
    assert q.deleted == []


def test_bounded_by_count():
    q = ListQueue([str(i) for i in range(50)])
    stats = drain(q, lambda batch: None, max_messages=23)
    assert stats.received == 23
    assert len(q.pending) == 27
