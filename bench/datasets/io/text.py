"""Sniffing raw text before any typed scan: compression, separators, the first and last
lines, line counts, close column names. Cheap: at most a MiB from either end of a file."""

from __future__ import annotations

import difflib
import re
from pathlib import Path

import polars as pl

from bench.errors import DataError

_SEPARATOR_NAMES = {
    ",": "comma",
    ";": "semicolon",
    "\t": "tab",
    "|": "pipe",
    "::": "'::'",
    " ": "space",
}
_CANDIDATE_SEPARATORS = ("\t", ";", ",", "|", "::", ":")
HEAD_BYTES = 1 << 20


def sep_name(sep: str) -> str:
    return _SEPARATOR_NAMES.get(sep, repr(sep))


# Magic bytes of compressed files and how to unpack each (a gzip file read as text
# looks like noise whose most frequent punctuation is taken for a separator).
_COMPRESSED = (
    (b"\x1f\x8b", "gzip", "gunzip -k {name}"),
    (b"PK\x03\x04", "zip", "unzip {name}"),
    (b"PK\x05\x06", "zip", "unzip {name}"),
    (b"\xfd7zXZ\x00", "xz", "unxz -k {name}"),
    (b"\x28\xb5\x2f\xfd", "zstd", "unzstd {name}"),
)
_BZIP2 = re.compile(rb"^BZh[1-9](\x31\x41\x59\x26\x53\x59|\x17\x72\x45\x38\x50\x90)")


def compression_of(head: bytes) -> tuple[str, str] | None:
    """(kind, command template) when `head` starts like a compressed file, else None."""
    for magic, kind, command in _COMPRESSED:
        if head.startswith(magic):
            return kind, command
    if _BZIP2.match(head):
        return "bzip2", "bunzip2 -k {name}"
    return None


def refuse_compressed(path: Path, head: bytes) -> None:
    """A DataError that says "this is a gzip file; decompress it" instead of a bogus
    diagnosis of its bytes as text."""
    found = compression_of(head)
    if found is None:
        return
    kind, command = found
    raise DataError(
        f"this is a {kind} file, not text",
        file=path,
        hint=f"decompress it ({command.format(name=path.name)}) and read the file it unpacks to",
    )


def read_head(path: Path) -> bytes:
    """The first MiB; a compressed file is refused here, before any text sniffing."""
    with open(path, "rb") as fh:
        head = fh.read(HEAD_BYTES)
    refuse_compressed(path, head)
    return head


def lines_of(data: bytes) -> list[str]:
    text = data.decode("utf-8", errors="replace").lstrip("\ufeff")
    return [line.rstrip("\r") for line in text.split("\n")]


def last_line(path: Path) -> tuple[str, int]:
    """The last non-blank line and the byte offset where it starts."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        start = max(0, size - HEAD_BYTES)
        fh.seek(start)
        tail = fh.read()
    end = len(tail.rstrip(b"\r\n \t"))
    begin = tail.rfind(b"\n", 0, end) + 1
    return tail[begin:end].decode("utf-8", errors="replace").rstrip("\r"), start + begin


def count_lines(path: Path, upto: int | None = None) -> int:
    """Newlines before byte offset `upto` (whole file when None), in 16 MiB chunks."""
    total, read = 0, 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 24):
            if upto is not None and read + len(chunk) > upto:
                return total + chunk[: upto - read].count(b"\n")
            total += chunk.count(b"\n")
            read += len(chunk)
    return total


def split_fields(line: str, sep: str) -> list[str]:
    return line.split(sep) if sep != " " else line.split()


def guess_separator(line: str) -> str | None:
    """The separator that splits a header or data line into the most fields, if any does."""
    best, count = None, 0
    for sep in _CANDIDATE_SEPARATORS:
        n = line.count(sep)
        if n > count:
            best, count = sep, n
    return best


def did_you_mean(name: str, found: list[str]) -> str:
    close = difflib.get_close_matches(name, found, n=1, cutoff=0.6)
    if not close:
        close = [f for f in found if f.lower().replace("_", "") == name.lower().replace("_", "")]
    return f" (did you mean {close[0]!r}?)" if close else ""


def scan_lines(path: Path) -> pl.LazyFrame:
    """Every line of a text file as one string column `line`, with its 0-based index `i`."""
    return pl.scan_csv(
        path,
        has_header=False,
        separator="\x1f",
        quote_char=None,
        schema={"line": pl.String},
        truncate_ragged_lines=True,
        encoding="utf8-lossy",
    ).with_row_index("i")
