"""moto's server (`python -m moto.server`, same arguments) with two costs removed.

1. SQS SendMessage is O(queue depth) in moto 5.2.5: it reads
   `queue.attributes.get("ContentBasedDeduplication")`, and `attributes` computes every queue
   attribute, three of them by scanning all messages (ApproximateNumberOfMessages...). Filling a
   queue is then quadratic: 45 msgs/s into an empty queue, 15 at 2,000 deep. While SendMessage
   runs, `attributes` here holds only what that path reads (the FIFO keys), computed as moto does.

2. `GET /moto-api/data.json` serialises every model moto ever created, every SQS message
included, twice each (moto 5.2.5). The mailbox simulator only needs what SES sent since its
last look, so data.json here also takes filters:

  ?service=ses                    only that service (repeatable)
  &offset_RawMessage=120          skip the first 120 instances of a model (creation order)

Without parameters the answer is exactly moto's. The simulator works against plain moto too
(it then gets the full dump).
3. moto's SQS is not safe under concurrent calls, and the drain makes them (8 receive and 8
   delete calls in flight, pipelines/common/drain.py). DeleteMessage rebuilds the queue's message
   list from a copy: two deletes at once lose one of them (the message reappears after its
   visibility timeout, although the delete answered success), and two receives at once can both
   take the same message. Measured against plain moto 5.2.5, 8 threads receiving then deleting
   200 messages, 30 rounds: 60 deleted messages back on the queue and 15 received twice; here
   none. Every SQS call that reads or changes the messages runs under one lock, as SQS applies
   each atomically; a long poll waits outside it.
4. SES's send quota: moto answers GetSendQuota with 1 message/s and 200 a day. Here it is SES's
   usual production quota, 14/s and 50,000 a day (DEVSTACK_SES_MAX_SEND_RATE to change the rate),
   so a send run under `make dev` goes at 14/s instead of 1/s.
"""

from __future__ import annotations

import json
import sys
from typing import Any
from urllib.parse import parse_qs, urlparse

from moto.moto_api._internal.responses import MotoAPIResponse

_full_dump = MotoAPIResponse.model_data


def _instance_dict(instance: Any) -> dict:
    out = {}
    for attr in dir(instance):
        if attr.startswith("_"):
            continue
        try:
            value = getattr(instance, attr)
            json.dumps(value)
        except (TypeError, AttributeError, ValueError):
            continue
        out[attr] = value
    return out


def model_data(self: MotoAPIResponse, request: Any, full_url: str, headers: Any) -> Any:
    query = parse_qs(urlparse(full_url).query)
    services = query.get("service")
    if not services:
        return _full_dump(self, request, full_url, headers)
    from moto.core.model_instances import model_data as tracked

    results: dict[str, dict[str, list]] = {}
    for service in services:
        models = tracked.get(service, {})
        results[service] = {}
        counts: dict[str, int] = {}
        for name in sorted(models):
            offset = int((query.get(f"offset_{name}") or ["0"])[0])
            instances = models[name].instances_tracked  # type: ignore[attr-defined]
            count = len(instances)  # first: a send arriving meanwhile is left for the next look
            results[service][name] = [_instance_dict(i) for i in instances[offset:count]]
            counts[name] = count
        results[service]["_counts"] = counts  # type: ignore[assignment]
    return 200, {"Content-Type": "application/json"}, json.dumps(results)


MotoAPIResponse.model_data = model_data  # type: ignore[method-assign]


def _patch_sqs_send() -> None:
    import threading

    from moto.core.utils import camelcase_to_underscores
    from moto.sqs.models import Queue, SQSBackend

    sending = threading.local()
    full_attributes = Queue.attributes.fget  # type: ignore[attr-defined]

    def attributes(self: Queue) -> dict[str, Any]:
        if not getattr(sending, "active", False):
            return full_attributes(self)
        if not self.fifo_queue:
            return {}
        out = {}
        for name in Queue.FIFO_ATTRIBUTES:
            value = getattr(self, camelcase_to_underscores(name))
            out[name] = str(value).lower() if isinstance(value, bool) else value
        return out

    plain_send = SQSBackend.send_message

    def send_message(self: SQSBackend, *args: Any, **kwargs: Any) -> Any:
        sending.active = True
        try:
            return plain_send(self, *args, **kwargs)
        finally:
            sending.active = False

    Queue.attributes = property(attributes)  # type: ignore[assignment, method-assign]
    SQSBackend.send_message = send_message  # type: ignore[method-assign]


_patch_sqs_send()


def _patch_sqs_atomic() -> None:
    import threading

    from moto.core.utils import unix_time
    from moto.sqs.models import SQSBackend

    lock = threading.RLock()   # re-entrant: the batch calls call the single ones

    def atomic(plain: Any) -> Any:
        def call(self: SQSBackend, *args: Any, **kwargs: Any) -> Any:
            with lock:
                return plain(self, *args, **kwargs)
        call.__name__ = plain.__name__
        return call

    for name in ("send_message", "send_message_batch", "delete_message", "delete_message_batch",
                 "change_message_visibility", "change_message_visibility_batch", "purge_queue",
                 "get_queue_attributes"):
        setattr(SQSBackend, name, atomic(getattr(SQSBackend, name)))

    plain_receive = SQSBackend.receive_message

    def receive_message(self: SQSBackend, queue_name: str, count: int, wait_seconds_timeout: int,
                        visibility_timeout: int, message_attribute_names: list[str] | None = None) -> Any:
        # One pass without waiting under the lock; a long poll waits for a send outside it, as moto does.
        deadline = unix_time() + (wait_seconds_timeout or 0)
        while True:
            with lock:
                result = plain_receive(self, queue_name, count, 0, visibility_timeout, message_attribute_names)
            left = deadline - unix_time()
            if result or left <= 0:
                return result
            self.get_queue(queue_name).wait_for_messages(min(1.0, left))  # type: ignore[arg-type]

    SQSBackend.receive_message = receive_message  # type: ignore[method-assign]


_patch_sqs_atomic()


def _patch_ses_quota() -> None:
    import os

    from moto.ses.models import SESQuota

    rate = float(os.environ.get("DEVSTACK_SES_MAX_SEND_RATE") or SES_MAX_SEND_RATE)
    init = SESQuota.__init__

    def __init__(self: SESQuota, sent: int) -> None:
        init(self, sent)
        self.max_send_rate = rate
        self.max24_hour_send = SES_MAX_24_HOUR_SEND

    SESQuota.__init__ = __init__  # type: ignore[method-assign]


SES_MAX_SEND_RATE = 14
SES_MAX_24_HOUR_SEND = 50_000
_patch_ses_quota()
if "moto.moto_api._internal.urls" in sys.modules:  # bound at import: bind again
    _urls = sys.modules["moto.moto_api._internal.urls"]
    _urls.url_paths["{0}/moto-api/data.json"] = _urls.response_instance.model_data


if __name__ == "__main__":
    from moto.server import main

    main()
