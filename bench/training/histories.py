"""Files of histories to rank, one history a line: plain item ids or a JSON object.

Every value keeps its column (a character position in a plain line, a JSON path such as
history[2] in a JSON line), so that a bad id or behaviour is named by file, line and
column; lines are decoded one at a time, so a bad byte names its line too.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from bench.errors import BenchError, ConfigError

LINE_FORMAT = (
    'one history a line: {"history": ["3006793", "2331370"], "behaviors": ["pv", "cart"]} '
    "or plain ids: 3006793 2331370 (spaces or commas)"
)
JSON_KEYS = ("history", "behaviors", "behaviours", "id")


@dataclass
class Query:
    """One line of a histories file, with the column of each of its values (a character
    position in a plain line, a JSON path such as history[2] in a JSON line)."""

    line: int
    history: list[str]
    columns: list[int | str]
    behaviors: list[str] | None = None
    behavior_columns: list[int | str] = field(default_factory=list)
    behavior_key: str = "behaviors"
    id: Any = None
    has_id: bool = False

    def echo(self) -> dict:
        """The input, as the answer to it repeats it."""
        out: dict[str, Any] = {"line": self.line}
        if self.has_id:
            out["id"] = self.id
        out["history"] = self.history
        if self.behaviors is not None:
            out["behaviors"] = self.behaviors
        return out


def lines_of(source: str | Path | IO[bytes]) -> Iterator[tuple[int, str, str]]:
    """(line number, text, file name) of each line, decoded as UTF-8 one line at a time
    so that a bad byte names its line."""
    if isinstance(source, (str, Path)) and str(source) == "-":
        import sys

        yield from _decoded(sys.stdin.buffer, "<stdin>")
        return
    if isinstance(source, (str, Path)):
        path = Path(source)
        try:
            handle = path.open("rb")
        except OSError as err:
            raise ConfigError(
                f"cannot read the histories file: {err.strerror}",
                file=path,
                option="--histories",
                hint="pass a file of histories, one a line (or - for standard input)",
            ) from None
        with handle:
            yield from _decoded(handle, str(path))
        return
    yield from _decoded(source, getattr(source, "name", "<stream>"))


def _decoded(handle: IO[bytes], name: str) -> Iterator[tuple[int, str, str]]:
    for number, raw in enumerate(handle, 1):
        if isinstance(raw, str):  # a text stream was passed
            yield number, raw, name
            continue
        try:
            yield number, raw.decode("utf-8"), name
        except UnicodeDecodeError as err:
            raise BenchError(
                f"not UTF-8 text (byte {raw[err.start]:#04x})",
                file=name,
                line=number,
                column=err.start + 1,
                hint="save the file as UTF-8",
            ) from None


def parse_history_line(text: str, line: int, file: str) -> Query | None:
    """A line of a histories file as a Query; None for a blank line; a malformed line is
    a BenchError naming file, line and column."""
    stripped = text.strip()
    if not stripped:
        return None
    if stripped.startswith("{"):
        return _json_line(text, line, file)
    tokens = list(re.finditer(r"[^\s,]+", text))
    if not tokens:
        raise BenchError(
            "no item ids on this line", file=file, line=line, column=1, hint=LINE_FORMAT
        )
    return Query(line, [m.group() for m in tokens], [m.start() + 1 for m in tokens])


def _json_line(text: str, line: int, file: str) -> Query:
    def bad(message: str, column: int | str | None, hint: str = LINE_FORMAT) -> BenchError:
        return BenchError(message, file=file, line=line, column=column, hint=hint)

    try:
        obj = json.loads(text.rstrip("\r\n"))  # so that a cut line's column is on it
    except json.JSONDecodeError as err:
        raise bad(f"not valid JSON: {err.msg}", err.colno) from None
    if not isinstance(obj, dict):
        raise bad("a JSON line must be an object", 1)
    extra = sorted(set(obj) - set(JSON_KEYS))
    if extra:
        raise bad(f"unknown key {extra[0]!r}", extra[0], f"a line's keys: {', '.join(JSON_KEYS)}")
    if "behaviors" in obj and "behaviours" in obj:
        raise bad("both behaviors and behaviours given", "behaviours", "give the names once")
    if "history" not in obj:
        raise bad('no "history" key', None)
    history = obj["history"]
    if not isinstance(history, list) or not history:
        raise bad("history must be a non-empty list of item ids", "history")
    items = []
    for i, value in enumerate(history):
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise bad(
                f"an item id is a string or an integer, got {json.dumps(value)[:40]}",
                f"history[{i}]",
            )
        items.append(str(value))
    query = Query(line, items, [f"history[{i}]" for i in range(len(items))])
    query.has_id, query.id = "id" in obj, obj.get("id")
    key = "behaviours" if "behaviours" in obj else "behaviors"
    names = obj.get(key)
    if names is not None:
        if not isinstance(names, list):
            raise bad(f"{key} must be a list of names (pv, fav, cart, buy)", key)
        for j, name in enumerate(names):
            if not isinstance(name, str):
                raise bad(f"a behaviour is a name, got {json.dumps(name)[:40]}", f"{key}[{j}]")
        query.behaviors = names
        query.behavior_columns = [f"{key}[{j}]" for j in range(len(names))]
        query.behavior_key = key
    return query
