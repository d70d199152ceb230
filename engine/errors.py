"""Errors the engine raises; each message names the problem and the fix, fit to show a user."""

from __future__ import annotations


class EngineError(Exception):
    """Base of every engine failure."""


class BackendUnavailable(EngineError):
    """A backend cannot run here (its package is missing, no device); says why."""


class ModelFileError(EngineError):
    """A model directory is missing, corrupt or inconsistent; names the file and what to do."""


class ContextWindowExceeded(EngineError):
    """The prompt does not fit the model's context window; the router escalates on it."""

    def __init__(self, prompt_tokens: int, context_window: int) -> None:
        self.prompt_tokens = prompt_tokens
        self.context_window = context_window
        super().__init__(
            f"The prompt needs {prompt_tokens} tokens but the local model's context window "
            f"is {context_window}. Shorten the conversation or use a larger model."
        )


class InvalidMessages(EngineError):
    """A message list the chat template cannot render (an unknown role, a misplaced system message)."""
