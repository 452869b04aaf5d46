"""python -m devstack.local_stripe --port 12111 [--queue-url URL --sqs-endpoint URL --delivery eventbridge]"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
import time

from devstack.local_stripe.app import Emulator, EmulatorConfig
from devstack.local_stripe.delivery import MODES, DeliveryConfig
from devstack.local_stripe.server import StripeServer


def main(argv: list[str] | None = None) -> None:
    env = os.environ
    parser = argparse.ArgumentParser(prog="python -m devstack.local_stripe", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(env.get("DEVSTACK_STRIPE_PORT", "12111")))
    parser.add_argument("--delivery", choices=MODES, default=env.get("LOCAL_STRIPE_DELIVERY", "eventbridge"))
    parser.add_argument("--queue-url", default=env.get("LOCAL_STRIPE_QUEUE_URL", ""))
    parser.add_argument("--sqs-endpoint", default=env.get("LOCAL_STRIPE_SQS_ENDPOINT", ""))
    parser.add_argument("--region", default=env.get("AWS_REGION", "us-east-1"))
    parser.add_argument("--source-id", default=env.get("LOCAL_STRIPE_EVENTBRIDGE_SOURCE_ID", "acct_local"))
    parser.add_argument("--webhook-secret", default=env.get("LOCAL_STRIPE_WEBHOOK_SECRET", "whsec_local"))
    parser.add_argument("--watch-pid", type=int, help="exit when this process is gone")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    delivery = DeliveryConfig(mode=args.delivery if args.queue_url else "off", queue_url=args.queue_url,
                              sqs_endpoint=args.sqs_endpoint, region=args.region, source_id=args.source_id,
                              webhook_secret=args.webhook_secret)
    server = StripeServer(Emulator(EmulatorConfig(delivery=delivery)), args.host, args.port)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server.start_background()
    logging.info("local Stripe on http://%s:%d (API %s), delivery %s -> %s", args.host, server.port,
                 server.emulator.config.api_version, delivery.mode, delivery.queue_url or "-")
    while not stop.wait(1.0):
        if args.watch_pid:
            try:
                os.kill(args.watch_pid, 0)
            except ProcessLookupError:
                logging.info("process %d is gone: stopping", args.watch_pid)
                break
            except PermissionError:
                pass
    server.shutdown()
    server.emulator.close()
    time.sleep(0.05)


if __name__ == "__main__":
    main()
