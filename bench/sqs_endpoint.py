"""An SQS endpoint made for benchmarks: `python -m bench.sqs_endpoint --port 0 --latency-ms 20`.

moto's SQS does work in proportion to the queue's length on every call, so it cannot stand
behind a throughput measurement. This one keeps its queues in memory with a constant cost per
call (a deque of visible messages, a heap of hidden ones), and holds every response for an
injected round trip (half before the call is applied, half after), so the consumer's real
boto3 client path is measured against a network like AWS's. It speaks the SQS JSON protocol
that botocore >= 1.34 sends (POST /, X-Amz-Target: AmazonSQS.<Action>) for what the drain and
the benchmarks use: CreateQueue, GetQueueUrl, GetQueueAttributes, SendMessage(Batch),
ReceiveMessage, DeleteMessage(Batch), ChangeMessageVisibility(Batch), PurgeQueue.

Two actions of its own (X-Amz-Target: MailroomBench.<Action>): Configure {"latency_ms": N,
"reset_stats": true} and Stats (calls per action, messages received more than once).
tests/bench/test_bench_sqs.py checks its behaviour against moto. Benchmarks only; not the product.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import heapq
import json
import threading
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field

ACCOUNT = "123456789012"
MAX_RECEIVE = 10


class SqsError(Exception):
    def __init__(self, code: str, query_code: str, message: str):
        super().__init__(message)
        self.code, self.query_code, self.message = code, query_code, message


@dataclass(slots=True)
class _Message:
    id: str
    body: str
    md5: str
    attributes: dict
    sent_ms: int
    receive_count: int = 0
    first_receive_ms: int = 0
    gen: int = 0                 # bumped on every receive and visibility change: stale heap/deque entries
    receipt: str = ""
    visible_at: float = 0.0


@dataclass
class _Queue:
    name: str
    url: str
    visibility_timeout: int = 30
    attributes: dict = field(default_factory=dict)
    messages: dict[str, _Message] = field(default_factory=dict)
    ready: deque = field(default_factory=deque)      # (id, gen) of visible messages, oldest first
    hidden: list = field(default_factory=list)       # heap of (visible_at, id, gen)

    def wake(self, now: float) -> None:
        while self.hidden and self.hidden[0][0] <= now:
            _, mid, gen = heapq.heappop(self.hidden)
            m = self.messages.get(mid)
            if m is not None and m.gen == gen:
                self.ready.append((mid, gen))

    def hide(self, m: _Message, seconds: float, now: float) -> None:
        m.gen += 1
        m.visible_at = now + seconds
        if seconds <= 0:
            self.ready.appendleft((m.id, m.gen))
        else:
            heapq.heappush(self.hidden, (m.visible_at, m.id, m.gen))

    def take(self, n: int, visibility: float, now: float) -> list[_Message]:
        self.wake(now)
        out = []
        while self.ready and len(out) < n:
            mid, gen = self.ready.popleft()
            m = self.messages.get(mid)
            if m is None or m.gen != gen:
                continue
            m.receive_count += 1
            if m.receive_count == 1:
                m.first_receive_ms = int(time.time() * 1000)
            self.hide(m, visibility, now)
            m.receipt = f"{m.id}.{m.gen}.{uuid.uuid4().hex[:8]}"
            out.append(m)
        return out

    def by_receipt(self, receipt: str) -> _Message | None:
        """The message a receipt handle names, if it is still on the queue; raises for a handle that
        is not one of ours."""
        mid, sep, rest = receipt.partition(".")
        if not sep or "." not in rest:
            raise SqsError("ReceiptHandleIsInvalid", "ReceiptHandleIsInvalid",
                           f"The input receipt handle \"{receipt}\" is not a valid receipt handle.")
        return self.messages.get(mid)


class Endpoint:
    """The queues and the protocol; `dispatch` is one call (no I/O)."""

    def __init__(self, base_url: str = "http://127.0.0.1", latency_ms: float = 0.0):
        self.base_url = base_url
        self.latency = latency_ms / 1000
        self.queues: dict[str, _Queue] = {}
        self.calls: Counter[str] = Counter()
        self.received_again = 0

    # ---- helpers ---------------------------------------------------------------------------

    def _queue(self, req: dict) -> _Queue:
        url = req.get("QueueUrl", "")
        q = self.queues.get(url.rstrip("/").rsplit("/", 1)[-1])
        if q is None:
            raise SqsError("QueueDoesNotExist", "AWS.SimpleQueueService.NonExistentQueue",
                           "The specified queue does not exist.")
        return q

    def _enqueue(self, q: _Queue, body: str, attrs: dict | None, delay: int = 0) -> _Message:
        m = _Message(str(uuid.uuid4()), body, hashlib.md5(body.encode()).hexdigest(), attrs or {},
                     int(time.time() * 1000))
        q.messages[m.id] = m
        q.hide(m, delay, time.monotonic()) if delay else q.ready.append((m.id, m.gen))
        return m

    # ---- actions ---------------------------------------------------------------------------

    def CreateQueue(self, req: dict) -> dict:
        name = req["QueueName"]
        if name not in self.queues:
            attrs = req.get("Attributes") or {}
            self.queues[name] = _Queue(name, f"{self.base_url}/{ACCOUNT}/{name}",
                                       int(attrs.get("VisibilityTimeout", 30)), dict(attrs))
        return {"QueueUrl": self.queues[name].url}

    def GetQueueUrl(self, req: dict) -> dict:
        q = self.queues.get(req["QueueName"])
        if q is None:
            raise SqsError("QueueDoesNotExist", "AWS.SimpleQueueService.NonExistentQueue",
                           "The specified queue does not exist.")
        return {"QueueUrl": q.url}

    def GetQueueAttributes(self, req: dict) -> dict:
        q = self._queue(req)
        now = time.monotonic()
        hidden = sum(1 for m in q.messages.values() if m.visible_at > now)   # not on the hot path
        every = {**q.attributes, "VisibilityTimeout": str(q.visibility_timeout),
                 "ApproximateNumberOfMessages": str(len(q.messages) - hidden),
                 "ApproximateNumberOfMessagesNotVisible": str(hidden),
                 "QueueArn": f"arn:aws:sqs:us-east-1:{ACCOUNT}:{q.name}"}
        names = req.get("AttributeNames") or ["All"]
        return {"Attributes": every if "All" in names else {n: every[n] for n in names if n in every}}

    def SendMessage(self, req: dict) -> dict:
        q = self._queue(req)
        m = self._enqueue(q, req["MessageBody"], req.get("MessageAttributes"), int(req.get("DelaySeconds", 0)))
        return {"MessageId": m.id, "MD5OfMessageBody": m.md5}

    def SendMessageBatch(self, req: dict) -> dict:
        q = self._queue(req)
        ok = []
        for e in req["Entries"]:
            m = self._enqueue(q, e["MessageBody"], e.get("MessageAttributes"), int(e.get("DelaySeconds", 0)))
            ok.append({"Id": e["Id"], "MessageId": m.id, "MD5OfMessageBody": m.md5})
        return {"Successful": ok, "Failed": []}

    async def ReceiveMessage(self, req: dict) -> dict:
        q = self._queue(req)
        n = int(req.get("MaxNumberOfMessages", 1))
        if not 1 <= n <= MAX_RECEIVE:
            raise SqsError("InvalidParameterValue", "InvalidParameterValue",
                           f"Value {n} for parameter MaxNumberOfMessages is invalid.")
        visibility = float(req.get("VisibilityTimeout", q.visibility_timeout))
        deadline = time.monotonic() + int(req.get("WaitTimeSeconds", 0))
        while True:
            got = q.take(n, visibility, time.monotonic())
            if got or time.monotonic() >= deadline:
                break
            await asyncio.sleep(min(0.02, max(0.0, deadline - time.monotonic())))
        wanted = set(req.get("MessageSystemAttributeNames") or []) | set(req.get("AttributeNames") or [])
        names = set(req.get("MessageAttributeNames") or [])
        out = []
        for m in got:
            if m.receive_count > 1:
                self.received_again += 1
            system = {"ApproximateReceiveCount": str(m.receive_count), "SentTimestamp": str(m.sent_ms),
                      "ApproximateFirstReceiveTimestamp": str(m.first_receive_ms), "SenderId": ACCOUNT}
            msg = {"MessageId": m.id, "ReceiptHandle": m.receipt, "MD5OfBody": m.md5, "Body": m.body}
            if wanted:
                msg["Attributes"] = system if "All" in wanted else {k: v for k, v in system.items() if k in wanted}
            if names and m.attributes:
                msg["MessageAttributes"] = (dict(m.attributes) if ("All" in names or ".*" in names)
                                            else {k: v for k, v in m.attributes.items() if k in names})
            out.append(msg)
        return {"Messages": out} if out else {}

    def DeleteMessage(self, req: dict) -> dict:
        q = self._queue(req)
        m = q.by_receipt(req["ReceiptHandle"])
        if m is not None:
            del q.messages[m.id]
        return {}

    def DeleteMessageBatch(self, req: dict) -> dict:
        q = self._queue(req)
        ok, failed = [], []
        for e in req["Entries"]:
            try:
                m = q.by_receipt(e["ReceiptHandle"])
            except SqsError as exc:
                failed.append({"Id": e["Id"], "SenderFault": True, "Code": exc.code, "Message": exc.message})
                continue
            if m is not None:
                del q.messages[m.id]
            ok.append({"Id": e["Id"]})
        return {"Successful": ok, "Failed": failed}

    def _change(self, q: _Queue, receipt: str, seconds: int) -> None:
        m = q.by_receipt(receipt)
        now = time.monotonic()
        if m is None or m.visible_at <= now:
            raise SqsError("MessageNotInflight", "AWS.SimpleQueueService.MessageNotInflight",
                           "Message does not exist or is not available for visibility timeout change.")
        q.hide(m, seconds, now)

    def ChangeMessageVisibility(self, req: dict) -> dict:
        self._change(self._queue(req), req["ReceiptHandle"], int(req["VisibilityTimeout"]))
        return {}

    def ChangeMessageVisibilityBatch(self, req: dict) -> dict:
        q = self._queue(req)
        ok, failed = [], []
        for e in req["Entries"]:
            try:
                self._change(q, e["ReceiptHandle"], int(e.get("VisibilityTimeout", 0)))
            except SqsError as exc:
                failed.append({"Id": e["Id"], "SenderFault": True, "Code": exc.code, "Message": exc.message})
                continue
            ok.append({"Id": e["Id"]})
        return {"Successful": ok, "Failed": failed}

    def PurgeQueue(self, req: dict) -> dict:
        q = self._queue(req)
        q.messages.clear(), q.ready.clear(), q.hidden.clear()
        return {}

    # ---- the benchmark's own -----------------------------------------------------------------

    def Configure(self, req: dict) -> dict:
        if "latency_ms" in req:
            self.latency = float(req["latency_ms"]) / 1000
        if req.get("reset_stats"):
            self.calls.clear()
            self.received_again = 0
        return {"latency_ms": self.latency * 1000}

    def Stats(self, req: dict) -> dict:
        return {"calls": dict(self.calls), "received_again": self.received_again, "latency_ms": self.latency * 1000}

    async def dispatch(self, target: str, body: bytes) -> tuple[int, dict]:
        service, _, action = target.partition(".")
        fn = getattr(self, action, None) if service in ("AmazonSQS", "MailroomBench") and action[:1].isupper() else None
        if fn is None:
            return 400, {"__type": "com.amazonaws.sqs#InvalidAction", "message": f"unsupported: {target}"}
        if service == "AmazonSQS":
            self.calls[action] += 1
        try:
            req = json.loads(body or b"{}")
            out = fn(req)
            if asyncio.iscoroutine(out):
                out = await out
            return 200, out
        except SqsError as exc:
            return 400, {"__type": f"com.amazonaws.sqs#{exc.code}", "message": exc.message, "_query": exc.query_code}
        except (KeyError, ValueError, TypeError) as exc:
            return 400, {"__type": "com.amazonaws.sqs#InvalidParameterValue",
                         "message": f"{type(exc).__name__}: {exc}"}


async def _connection(endpoint: Endpoint, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            line = await reader.readline()
            if not line:
                return
            headers: dict[bytes, bytes] = {}
            while True:
                h = await reader.readline()
                if h in (b"\r\n", b"\n", b""):
                    break
                k, _, v = h.partition(b":")
                headers[k.strip().lower()] = v.strip()
            body = await reader.readexactly(int(headers.get(b"content-length", b"0")))
            half = endpoint.latency / 2
            if half:
                await asyncio.sleep(half)     # the request's way there
            status, payload = await endpoint.dispatch(headers.get(b"x-amz-target", b"").decode(), body)
            if half:
                await asyncio.sleep(half)     # the response's way back
            extra = ""
            if status != 200 and "_query" in payload:
                extra = f"x-amzn-query-error: {payload.pop('_query')};Sender\r\n"
            data = json.dumps(payload).encode()
            writer.write((f"HTTP/1.1 {status} {'OK' if status == 200 else 'Bad Request'}\r\n"
                          f"Content-Type: application/x-amz-json-1.0\r\nContent-Length: {len(data)}\r\n"
                          f"x-amzn-RequestId: {uuid.uuid4()}\r\n{extra}\r\n").encode() + data)
            await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
        return
    finally:
        writer.close()


async def serve(host: str, port: int, latency_ms: float, started: threading.Event | None = None,
                box: dict | None = None) -> None:
    endpoint = Endpoint(latency_ms=latency_ms)
    server = await asyncio.start_server(lambda r, w: _connection(endpoint, r, w), host, port, backlog=512)
    bound = server.sockets[0].getsockname()[1]
    endpoint.base_url = f"http://{host}:{bound}"
    if box is not None:
        box.update(url=endpoint.base_url, endpoint=endpoint, loop=asyncio.get_running_loop(), server=server)
    if started is not None:
        started.set()
    else:
        print(f"listening {endpoint.base_url}", flush=True)
    async with server:
        await server.serve_forever()


class Running:
    """The endpoint on a background thread (tests): `.url`, `.endpoint`, `.stop()`."""

    def __init__(self, latency_ms: float = 0.0):
        box: dict = {}
        started = threading.Event()
        self._thread = threading.Thread(target=lambda: _run_quiet(serve("127.0.0.1", 0, latency_ms, started, box)),
                                        daemon=True, name="bench-sqs-endpoint")
        self._thread.start()
        started.wait(10)
        self.url, self.endpoint, self._loop, self._server = box["url"], box["endpoint"], box["loop"], box["server"]

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._server.close)
        self._thread.join(5)

    def __enter__(self) -> Running:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _run_quiet(coro) -> None:
    try:
        asyncio.run(coro)
    except asyncio.CancelledError:
        pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--latency-ms", type=float, default=0.0, help="round trip added to every call")
    args = ap.parse_args()
    asyncio.run(serve(args.host, args.port, args.latency_ms))


if __name__ == "__main__":
    main()
