"""What every download shares, from the Hub or from a URL: its timeout, the line that says a model's bytes
are being fetched (with its licence, once a model, and each file's size) and the progress line on a terminal."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from .errors import ModelError

if TYPE_CHECKING:
    from .catalogue import ModelInfo

Notify = Callable[[str], None]  # hears of what the user should know, e.g. a first download's licence

TIMEOUT_VARIABLE = "STEMSPLIT_DOWNLOAD_TIMEOUT"
DEFAULT_TIMEOUT_SECONDS = 30.0  # to connect, and then between any two reads: a server silent for longer has failed


def download_timeout() -> float:
    """Seconds a server may take to accept a connection, and to send anything once asked."""
    text = os.environ.get(TIMEOUT_VARIABLE, "")
    if not text:
        return DEFAULT_TIMEOUT_SECONDS
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds <= 3600:
        raise ModelError(f"{TIMEOUT_VARIABLE}={text} is not a number of seconds between 0 and 3600")
    return seconds


def megabytes(size: int | None) -> str:
    return "size unknown" if size is None else f"{size / 1e6:.1f} MB"


@dataclass
class Announcement:
    """Tells the user when a model's bytes are actually fetched, once a file (a resumed transfer is the
    same file); the first names the model's licence."""

    info: ModelInfo
    notify: Notify
    announced: set[str] = field(default_factory=set, init=False)

    def fetching(self, name: str, size: int | None) -> None:
        if name in self.announced:
            return
        licence = "" if self.announced else f" (licence: {self.info.licence})"
        self.notify(f"downloading model '{self.info.name}'{licence}: {name}, {megabytes(size)}")
        self.announced.add(name)


class Progress:
    """One line on a terminal's stderr, rewritten as the bytes come; nothing when stderr is not a terminal."""

    def __init__(self, name: str, size: int | None) -> None:
        self.name, self.size = name, size
        self.shown = sys.stderr.isatty()
        self.reported = -1

    def advance(self, received: int) -> None:
        percent = received * 100 // self.size if self.size else 0
        if self.shown and percent != self.reported:
            self.reported = percent
            sys.stderr.write(f"\r  {self.name}: {megabytes(received)} of {megabytes(self.size)} ({percent}%)")
            sys.stderr.flush()

    def done(self) -> None:
        if self.shown and self.reported >= 0:
            sys.stderr.write("\n")
            sys.stderr.flush()
