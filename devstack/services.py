"""The stack's second process: SMTP sink, mailbox simulator and mail viewer (`python -m devstack.services`).

Reads ports and the topic from <state>/state.json (written by devstack.stack.up). Stops on
SIGTERM/SIGINT; with --watch-pid it also stops the whole stack (moto included) when that
process disappears, so a killed test run or `make dev` leaves nothing behind.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
import time

from devstack.mailbox_simulator import MailboxSimulator
from devstack.mail_viewer import MailViewer, keep_ses_copy
from devstack.smtp_sink import MailDir, SmtpSink
from devstack.sns_signer import load_or_create_signing_identity
from devstack.stack import PROCESS_MARKERS, stop_pid, client_factory
from devstack.state import StackState
from devstack.topology import NOTIFICATIONS_QUEUE


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--state-dir", required=True)
    parser.add_argument("--watch-pid", type=int)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # one line per connection otherwise
    state = StackState.load(args.state_dir)
    if state is None:
        raise SystemExit(f"no stack state in {args.state_dir}")

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    sink = SmtpSink(state.sink_dir, state.smtp_port)
    sink.start()
    logging.info("SMTP sink on 127.0.0.1:%d", state.smtp_port)
    viewer = None
    if state.mail_port:
        viewer = MailViewer({"ses": state.ses_mail_dir, "smtp": state.sink_dir}, state.mail_port)
        viewer.start()
        logging.info("mail viewer on %s", viewer.url)
    ses_copy = keep_ses_copy(MailDir(state.ses_mail_dir))
    simulator = None
    orphaned = False
    while not stop.wait(1.0 if simulator else 0.05):
        if args.watch_pid and not _alive(args.watch_pid):
            orphaned = True
            break
        if simulator is None:
            current = StackState.load(args.state_dir)
            if current is None:  # `up` failed and removed the state
                break
            if current.topic_arn and current.queue_urls:
                simulator = MailboxSimulator(
                    endpoint=current.endpoint, client=client_factory(current.endpoint),
                    queue_url=current.queue_urls[NOTIFICATIONS_QUEUE], topic_arn=current.topic_arn,
                    identity=load_or_create_signing_identity(current.cert_dir),
                    answered_file=current.path / "simulator-answered.txt",
                    signature_version=current.signature_version, on_sent=ses_copy,
                )
                simulator.start()
                logging.info("mailbox simulator polling %s", current.endpoint)
    sink.stop()
    if viewer:
        viewer.stop()
    if simulator:
        simulator.stop()
    if orphaned:
        logging.info("process %d is gone: stopping the stack", args.watch_pid)
        stop_pid(state.stripe_pid, PROCESS_MARKERS["stripe_pid"])
        stop_pid(state.moto_pid, PROCESS_MARKERS["moto_pid"])
        StackState.remove(args.state_dir)
        time.sleep(0.1)


if __name__ == "__main__":
    main()
