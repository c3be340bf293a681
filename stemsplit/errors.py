"""Errors the user can act on. Each kind maps to one documented exit code."""

from __future__ import annotations


class StemsplitError(Exception):
    """Base class: the message is shown to the user as a single line."""

    exit_code = 1


class InputError(StemsplitError):
    """An input is missing, unreadable, not audio, or empty."""

    exit_code = 1


class ModelError(StemsplitError):
    """A model is unknown, cannot be downloaded, or its weights are corrupt."""

    exit_code = 3


class OutputError(StemsplitError):
    """Stems cannot be written (unwritable folder, disk full, bad template)."""

    exit_code = 4


class FfmpegError(StemsplitError):
    """No usable ffmpeg: none found, or the one named does not run."""

    exit_code = 5


class SettingsError(StemsplitError, ValueError):
    """A setting or argument has a value it cannot take; the message names the valid ones, and
    `setting` (e.g. "precision") the command-line option at fault, where one is."""

    exit_code = 2

    def __init__(self, message: str, setting: str | None = None):
        super().__init__(message)
        self.setting = setting
