"""User-facing errors: the CLI prints these as a message and a fix, never a traceback."""

from __future__ import annotations

from pathlib import Path


class BenchError(Exception):
    """A mistake the user can fix: bad input, a wrong option, missing data.

    `where` names the file (and line / column when known) or the option at fault;
    `hint` says how to fix it.
    """

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        line: int | None = None,
        column: str | None = None,
        option: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.message = message
        self.file = str(file) if file is not None else None
        self.line = line
        self.column = column
        self.option = option
        self.hint = hint
        super().__init__(self.render())

    @property
    def where(self) -> str:
        parts = []
        if self.file:
            parts.append(self.file)
        if self.line is not None:
            parts.append(f"line {self.line}")
        if self.column:
            parts.append(f"column {self.column!r}")
        if self.option:
            parts.append(f"option {self.option}")
        return ", ".join(parts)

    def render(self) -> str:
        text = f"{self.where}: {self.message}" if self.where else self.message
        if self.hint:
            text += f"\n  fix: {self.hint}"
        return text


class DataError(BenchError):
    """Raw data that cannot be read into the canonical schema."""


class ConfigError(BenchError):
    """An unknown name or a bad value in options or a config file."""


class RunInterrupted(BenchError):
    """A run stopped from outside (SIGTERM): not a success, and not the user's mistake."""

    exit_code = 143  # 128 + SIGTERM, what a shell reports for a process the signal ended
