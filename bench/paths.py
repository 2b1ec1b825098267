"""Names that become folders, and removals that stay under their root.

A run id or a study name is joined to a root folder and later wiped and rewritten;
`../victim` or an absolute path would reach outside it. Names are limited to a safe
character set, and every removal checks that its target lies strictly under its root.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from bench.errors import ConfigError

SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._=+-]{0,199}")
SAFE_NAME_TEXT = "letters, digits and . _ = + -, starting with a letter or digit, at most 200"


def check_name(value: str, option: str) -> str:
    """`value` unchanged when it is a safe single folder name, else a ConfigError."""
    if not isinstance(value, str) or not SAFE_NAME.fullmatch(value) or ".." in value:
        raise ConfigError(
            f"{value!r} cannot name a folder: only {SAFE_NAME_TEXT} characters are allowed",
            option=option,
            hint="pick a plain name such as my-run-1 (no '/', '..' or absolute paths)",
        )
    return value


def is_under(path: str | Path, root: str | Path) -> bool:
    """True when `path` resolves strictly inside `root` (links followed)."""
    inner, outer = Path(path).resolve(), Path(root).resolve()
    return inner != outer and outer in inner.parents


def remove_tree(path: str | Path, root: str | Path, *, ignore_errors: bool = False) -> None:
    """rmtree `path`, but only when it lies strictly under `root`; anything else is a bug
    or a hostile name, and raising beats deleting a user's folder."""
    path = Path(path)
    # the entry itself, not where a link would lead
    entry = path.resolve() if path.name in ("", ".", "..") else path.parent.resolve() / path.name
    outer = Path(root).resolve()
    if entry == outer or outer not in entry.parents:
        raise ValueError(f"refusing to remove {path}: it is not inside {root}")
    if path.is_symlink():
        path.unlink()  # the link, never what it points to
        return
    if path.exists():
        shutil.rmtree(path, ignore_errors=ignore_errors)


def stored_path(run_dir: str | Path, stored: str, what: str) -> Path:
    """A path result.json recorded, read against the run folder it now sits in.

    New runs store paths relative to their folder. Older ones stored absolute paths;
    a file of the same name inside this folder wins over them, so a copied folder never
    silently reads the original's files.
    """
    run_dir = Path(run_dir)
    path = Path(stored)
    if not path.is_absolute():
        path = run_dir / path
    else:
        for local in (run_dir / path.name, run_dir / "checkpoints" / path.name):
            if local.exists():
                path = local
                break
    if not path.exists():
        raise ConfigError(
            f"the run's {what} {stored!r} is missing",
            file=run_dir / "result.json",
            option="--run",
            hint="pass the whole run folder (checkpoints/ included), as `bench run` wrote it",
        )
    return path
