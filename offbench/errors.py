"""The one exception type for problems a user can cause and fix."""

from __future__ import annotations


class OffbenchError(Exception):
    """A user-fixable problem. The CLI prints it as one line (plus the fix) and exits with code 2."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def line(self) -> str:
        """The message and its fix as the one line the CLI and a sweep's failure list print."""
        return self.message + (f" — {self.hint}" if self.hint else "")

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"
