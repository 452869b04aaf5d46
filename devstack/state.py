"""Where the stack keeps its state, and what it records there (ports, pids) in state.json."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_STATE_DIR = REPO_ROOT / ".devstack"
STATE_FILE = "state.json"


def state_dir_from_env(environ: dict[str, str] | None = None) -> Path:
    environ = os.environ if environ is None else environ
    return Path(environ.get("DEVSTACK_STATE_DIR") or DEFAULT_STATE_DIR).resolve()


@dataclass
class StackState:
    state_dir: str
    moto_port: int
    smtp_port: int
    duckdb_path: str
    topic_arn: str = ""
    signature_version: str = "2"
    moto_pid: int | None = None
    services_pid: int | None = None
    stripe_port: int = 0
    stripe_pid: int | None = None
    mail_port: int = 0  # the mail viewer (devstack/mail_viewer.py), in the services process
    started_at: float = 0.0
    startup_seconds: float = 0.0
    queue_urls: dict[str, str] = field(default_factory=dict)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.moto_port}"

    @property
    def stripe_base(self) -> str:
        return f"http://127.0.0.1:{self.stripe_port}"

    @property
    def path(self) -> Path:
        return Path(self.state_dir)

    @property
    def cert_dir(self) -> Path:
        return self.path / "sns-certs"

    @property
    def sink_dir(self) -> Path:
        return self.path / "smtp-sink"

    @property
    def ses_mail_dir(self) -> Path:
        """A copy of every message moto's SES accepted, in the SMTP sink's layout (mailbox_simulator.py)."""
        return self.path / "ses-mail"

    @property
    def mail_url(self) -> str:
        return f"http://127.0.0.1:{self.mail_port}"

    def save(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        tmp = self.path / f".{STATE_FILE}.tmp"
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(self.path / STATE_FILE)

    @classmethod
    def load(cls, state_dir: Path | str) -> StackState | None:
        try:
            data = json.loads((Path(state_dir) / STATE_FILE).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return cls(**data)

    @staticmethod
    def remove(state_dir: Path | str) -> None:
        (Path(state_dir) / STATE_FILE).unlink(missing_ok=True)
