"""`bench leaderboard`: the results store as tables that can be cited.

`bench.leaderboard_tables` builds the tables (which runs make each row, mean ± std over
seeds, paired-bootstrap intervals against the top row and the floors, budget curves);
`bench.leaderboard_text` writes each as Markdown and numeric CSV plus summary.md;
`bench.leaderboard_page` renders them as one static HTML page with sortable tables, an
accuracy-versus-training-cost plot and budget curves. This module puts them together,
so the data flows one way: store -> tables -> files.
"""

from __future__ import annotations

from pathlib import Path

from bench.leaderboard_page import publish_run_files, render_page
from bench.leaderboard_tables import build_tables
from bench.leaderboard_text import log_tables, write_text_files

__all__ = ["build_tables", "log_tables", "write_leaderboards"]


def write_leaderboards(tables: list[dict], out: str | Path) -> list[Path]:
    """Every table's .md and .csv, summary.md, the published run files and index.html."""
    out = Path(out)
    written = write_text_files(tables, out)
    publish_run_files(tables, out)
    page = out / "index.html"
    page.write_text(render_page(tables, out))
    return [*written, page]
