"""Long commands say how far they got: devstack's progress lines, and the quarantine replay's
per-chunk log."""

from __future__ import annotations

import io

import pytest

from devstack.progress import Counter, Step
from pipelines.common import consumer as kit
from pipelines.common.consumer import process_batch, replay_quarantine
from pipelines.common.queue_message import QueueMessage
from tests.common.test_consumer_kit import RowConsumer, store  # noqa: F401 - the store fixture


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_step_off_a_terminal_prints_a_start_and_an_end_line():
    out = io.StringIO()
    with Step("starting the thing", stream=out):
        pass
    lines = out.getvalue().splitlines()
    assert lines[0] == "starting the thing ..."
    assert lines[1].startswith("starting the thing ... done in ") and len(lines) == 2


def test_step_on_a_terminal_updates_its_line_and_says_when_it_failed():
    out = Tty()
    with pytest.raises(RuntimeError):
        with Step("waiting", stream=out, interval=0.01) as step:
            step.note = ", 10 sent"
            import time

            time.sleep(0.1)
            raise RuntimeError("boom")
    text = out.getvalue()
    assert "\rwaiting ... 0s, 10 sent" in text
    assert text.endswith("\033[K\n") and "\rwaiting ... failed in " in text


def test_counter_shows_on_a_terminal_only():
    quiet, live = io.StringIO(), Tty()
    for stream in (quiet, live):
        c = Counter(stream)
        c.show("demo traffic: 3 requests sent")
        c.end()
    assert quiet.getvalue() == ""
    assert live.getvalue() == "\rdemo traffic: 3 requests sent\033[K\n"


def test_replay_logs_progress_per_chunk(store, monkeypatch, caplog):  # noqa: F811
    monkeypatch.setattr(kit, "REPLAY_CHUNK", 2)
    bodies = [f"refuse {i}" for i in range(5)]
    # One batch each: the replay takes rows oldest first, so "refuse 4" (still failing) comes last.
    # Quarantined in one batch, the rows would share one quarantined_at and come in any order.
    for i, body in enumerate(bodies):
        process_batch(store, RowConsumer(), [QueueMessage(f"m{i}", f"rh{i}", body)])

    class Fixed(RowConsumer):
        def prepare(self, messages):
            return super().prepare([QueueMessage(m.sqs_message_id, "", m.body if m.body == "refuse 4"
                                                 else m.body.replace("refuse", "fine"), received_at=m.received_at)
                                    for m in messages])

    caplog.set_level("INFO", logger=kit.__name__)
    fixed = Fixed()
    counters = replay_quarantine(store, fixed)
    assert counters["messages"] == 5 and counters["stored"] == 4 and counters["still_failing"] == 1
    assert fixed.prepare_calls == [2, 2, 1]
    progress = [r.getMessage() for r in caplog.records if "replayed" in r.getMessage()]
    assert progress == ["kit-test: replayed 2 of 5 quarantined rows, 0 still failing",
                        "kit-test: replayed 4 of 5 quarantined rows, 0 still failing",
                        "kit-test: replayed 5 of 5 quarantined rows, 1 still failing"]
