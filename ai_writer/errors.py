"""Typed domain errors of ai-writer.

Every error's ``str()`` is a one-line message meant for the user, naming the file or
setting at fault and what is wrong. The CLI prints that line alone (``Error: MESSAGE``, exit
code 2) and the HTTP server answers every error in its one JSON shape; code that calls
ai-writer as a library (the tests, say) gets the exception itself. Any other exception is a
bug: the CLI lets its traceback show.
"""

from __future__ import annotations


class AiWriterError(Exception):
    """Base class of every error ai-writer reports to the user."""


class SettingsError(AiWriterError):
    """A sampling or generation setting is missing, of the wrong type or out of range."""


class VocabularyError(AiWriterError):
    """A vocabulary file cannot be read or does not describe a valid character table."""


class ModelFileError(AiWriterError):
    """A model file is missing, truncated, of an unknown format or inconsistent."""


class InputTextError(AiWriterError):
    """The text given to the model (prompt or story file) cannot be used."""


class BackendError(AiWriterError):
    """A compute backend is unavailable (missing package, device) or failed to run."""


PYTORCH_INSTALL = "pip install 'ai-writer[torch]'"  # torch is optional: only the torch backends and training need it


def torch_missing(what: str) -> BackendError:
    """The one-line error of `what` (a backend, a command) where PyTorch is not installed."""
    return BackendError(f"{what} needs PyTorch, which is not installed: {PYTORCH_INSTALL}")
