"""Progress for long commands: a line that says what is going on and, on a terminal, how long
it has taken so far; the outcome replaces it. Off a terminal (pipes, CI logs) one line when the
step starts and one when it ends, nothing in between."""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO


class Step:
    """`with Step("starting the local stack"):` prints "starting the local stack ... 3s" live."""

    def __init__(self, what: str, stream: TextIO | None = None, interval: float = 0.5) -> None:
        self.what = what
        self.stream = stream or sys.stderr
        self.interval = interval
        self.live = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.started = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.note = ""

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def _write(self, text: str, end: str = "") -> None:
        self.stream.write(text + end)
        self.stream.flush()

    def _tick(self) -> None:
        while not self._stop.wait(self.interval):
            self._write(f"\r{self.what} ... {self.elapsed():.0f}s{self.note}\033[K")

    def __enter__(self) -> Step:
        self.started = time.monotonic()
        if self.live:
            self._write(f"{self.what} ...")
            self._thread = threading.Thread(target=self._tick, name="progress", daemon=True)
            self._thread.start()
        else:
            self._write(f"{self.what} ...", end="\n")
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join()
        outcome = "failed" if exc_type else "done"
        line = f"{self.what} ... {outcome} in {self.elapsed():.1f}s"
        self._write(f"\r{line}\033[K" if self.live else line, end="\n")


class Counter:
    """A running count on one terminal line ("demo traffic: 42 requests sent"); silent off a terminal."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self.live = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.shown = False

    def show(self, text: str) -> None:
        if self.live:
            self.stream.write(f"\r{text}\033[K")
            self.stream.flush()
            self.shown = True

    def end(self) -> None:
        if self.shown:
            self.stream.write("\n")
            self.stream.flush()
            self.shown = False
