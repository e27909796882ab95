"""The exceptions atlas_hf raises, in one place (each says what was wrong, which input, and how to fix it)."""

from __future__ import annotations


class EnvironmentNotFoundError(KeyError):
    """`make_env` was given a name that no environment is registered under."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0]) if self.args else ""
