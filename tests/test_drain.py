"""The drain loop's ordering guarantee: commit (handle) before delete, bounded by count."""

import pytest

from pipelines.common.drain import DrainOptions, drain


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

    stats = drain(q, handle, DrainOptions(batch_size=20))
    assert seen == [str(i) for i in range(25)]
    assert q.log == ["receive:10", "receive:10", "handle:20", "delete:20",
                     "receive:5", "receive:0", "handle:5", "delete:5"]
    assert stats["received"] == stats["deleted"] == 25
    assert stats["receive_calls"] == 4 and stats["delete_calls"] == 3


def test_a_failing_handle_deletes_nothing():
    q = ListQueue(["a", "b"])

    def handle(batch):
        raise RuntimeError("db down")

    with pytest.raises(RuntimeError):
        drain(q, handle)
    assert q.deleted == []


def test_bounded_by_count():
    q = ListQueue([str(i) for i in range(50)])
    stats = drain(q, lambda batch: None, DrainOptions(max_messages=23))
    assert stats["received"] == 23
    assert len(q.pending) == 27


def test_quarantine_keeps_every_row_once_with_its_first_reason(tmp_path):
    from pipelines.common.quarantine import Quarantined, quarantine
    from pipelines.store.schema import database

    db = database(str(tmp_path / "q.duckdb"))
    flood = [Quarantined("ses-notifications", f"sqs-{i}", f"body {i}", "signature does not verify")
             for i in range(2_000)]
    with db.connect() as conn:
        # The same message twice in one call and again later: one row, the first reason.
        assert quarantine(conn, flood + [Quarantined("ses-notifications", "sqs-7", "body 7", "second")]) == 2_000
        assert quarantine(conn, [Quarantined("ses-notifications", "sqs-7", "body 7", "third")]) == 1
        rows = conn.execute("SELECT count(*), count(DISTINCT quarantine_id) FROM quarantine").fetchone()
        reason = conn.execute("SELECT raw_body, reason FROM quarantine "
                              "WHERE quarantine_id = 'ses-notifications:sqs-7'").fetchone()
    assert rows == (2_000, 2_000)
    assert reason == ("body 7", "signature does not verify")


def test_a_stop_takes_no_new_messages_and_deletes_only_finished_batches():
    from pipelines.common.stop import Stopped, StopRequest

    # Stop requested while batch 2 is being received: batch 1 was finished and deleted; batch 2
    # (received, never handed) is abandoned on the queue; no receive follows.
    q = ListQueue([str(i) for i in range(60)])
    stop = StopRequest()
    receive = q.receive

    def receive_then_stop(max_messages=10, wait_seconds=1):
        out = receive(max_messages, wait_seconds)
        if q.deleted:
            stop.request("test")
        return out

    q.receive = receive_then_stop
    stats = drain(q, lambda batch: None, DrainOptions(batch_size=20), stop=stop)
    assert q.deleted == [f"h{i}" for i in range(20)]
    assert (stats["received"], stats["abandoned"], stats["stopped"]) == (30, 10, 1)

    # A batch whose handle stops part-way (Stopped) is not deleted either.
    q = ListQueue([str(i) for i in range(30)])

    def handle(batch):
        raise Stopped()

    stats = drain(q, handle, DrainOptions(batch_size=20), stop=StopRequest())
    assert q.deleted == [] and stats["stopped_in_batch"] == 20 and stats["received"] == 20
