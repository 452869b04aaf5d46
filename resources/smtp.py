"""SMTP sender (any relay) and console sender (development)."""

from __future__ import annotations

import email.utils
import smtplib
import ssl
import sys
import threading
from email.parser import BytesHeaderParser
import dagster as dg
from pydantic import Field, PrivateAttr

from resources.outgoing_email import OutgoingEmail, PermanentSendError, TransientSendError


SECURITY_MODES = ("none", "starttls", "tls")


def message_id_of(raw: bytes) -> str:
    """The Message-ID header of a MIME message (SMTP has no provider id)."""
    mid = BytesHeaderParser().parsebytes(raw).get("Message-ID")
    return (mid or email.utils.make_msgid()).strip().strip("<>")


class SMTPSenderResource(dg.ConfigurableResource):
    host: str
    port: int
    security: str = Field(default="none", description="none, starttls or tls (SMTP_SECURITY).")
    username: str = ""
    password: str = Field(default="", description="Never logged.")
    timeout_seconds: float = 30.0
    _local: threading.local = PrivateAttr(default_factory=threading.local)
    _open: set = PrivateAttr(default_factory=set)
    _open_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def max_send_rate(self) -> float | None:
        return None

    def _connect(self) -> smtplib.SMTP:
        if self.security not in SECURITY_MODES:
            raise ValueError(f"SMTP_SECURITY must be one of {', '.join(SECURITY_MODES)}; got {self.security!r}")
        if self.security == "tls":
            conn: smtplib.SMTP = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout_seconds,
                                                  context=ssl.create_default_context())
        else:
            conn = smtplib.SMTP(self.host, self.port, timeout=self.timeout_seconds)
            if self.security == "starttls":
                conn.starttls(context=ssl.create_default_context())
        if self.username:
            conn.login(self.username, self.password)
        return conn

    def _connection(self) -> smtplib.SMTP:
        # One connection per sending thread, reused across messages.
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self._connect()
            with self._open_lock:
                self._open.add(conn)
        return conn

    def _drop_connection(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            self._close(conn)

    def _close(self, conn: smtplib.SMTP) -> None:
        with self._open_lock:
            self._open.discard(conn)
        try:
            conn.close()
        except Exception:  # noqa: BLE001 - already broken
            pass

    def send(self, email_: OutgoingEmail) -> str:
        try:
            self._connection().sendmail(email_.sender, [email_.recipient], email_.raw)
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = next(iter(exc.recipients.values()))
            if code == 421:  # the server is closing the channel
                self._drop_connection()
            self._raise_for(code, text)
        except smtplib.SMTPResponseException as exc:
            if exc.smtp_code == 421:
                self._drop_connection()
            self._raise_for(exc.smtp_code, exc.smtp_error)
        except (smtplib.SMTPServerDisconnected, ConnectionError, OSError) as exc:
            self._drop_connection()
            raise TransientSendError(f"SMTP connection to {self.host}:{self.port}: {exc}") from None
        return email_.message_id or message_id_of(email_.raw)

    @staticmethod
    def _raise_for(code: int, text: bytes | str) -> None:
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        if 400 <= code < 500:
            raise TransientSendError(f"SMTP {code}: {text}")
        raise PermanentSendError(f"SMTP {code}: {text}")

    def close(self) -> None:
        """Close every connection this sender opened, from any thread (QUIT, then close)."""
        self._local.conn = None
        with self._open_lock:
            conns, self._open = list(self._open), set()
        for conn in conns:
            try:
                conn.quit()
            except Exception:  # noqa: BLE001 - already broken
                pass
            try:
                conn.close()
            except Exception:  # noqa: BLE001
                pass


class ConsoleSenderResource(dg.ConfigurableResource):
    """Writes each message's headers to stdout; for development without any relay.

    Bodies are left out: they can carry tokens and reset links, and stdout ends up in
    Dagster's captured logs.
    """

    def max_send_rate(self) -> float | None:
        return None

    def send(self, email_: OutgoingEmail) -> str:
        headers = BytesHeaderParser().parsebytes(email_.raw)
        shown = "".join(f"{k}: {headers[k]}\n" for k in ("From", "To", "Subject", "Date", "Message-ID")
                        if headers[k] is not None)
        sys.stdout.write(f"--- email to {email_.recipient} ({email_.kind}, {len(email_.raw)} bytes) ---\n{shown}")
        return message_id_of(email_.raw)
