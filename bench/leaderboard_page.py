"""The leaderboard as one static HTML page a reader can cite from (`index.html`).

Per table: a protocol card (what the protocol does, its parameters and hash, the raw-data
fingerprint, the counts the numbers rest on), an accuracy-against-training-cost plot with
95% intervals as error bars and, for tuned models, budget curves, both drawn by matplotlib
as inline SVG with the text kept as text; then a sortable table whose intervals are
numbers (the row's NDCG@10 and its difference to the top and to the best floor, each with
its 95% bounds) and whose rows link to their runs' configuration, result and logs. The page
says when and from which commit it was generated; it needs no network (no CDN, inline
script and styles). The plots are drawn in `leaderboard_plots.py`.
"""

from __future__ import annotations

import html
import inspect
import json
import math
import os
import re
import shutil
import subprocess
import urllib.parse
from datetime import UTC, datetime
from pathlib import Path

from bench.leaderboard_plots import accuracy_plot, curves_plot
from bench.leaderboard_tables import (
    EXPLORE_METRICS,
    FLOOR_RULE,
    METRICS,
    PRIMARY,
    SIGNIFICANCE,
    _quantiles,
)
from bench.leaderboard_text import (
    DASH,
    _budget_cell,
    _cell,
    _coverage_line,
    _facts_line,
    _floor_line,
    _title,
)
from bench.paths import remove_tree

# ------------------------------------------------------------------ provenance


def _git(*args: str, timeout: float) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _source_state() -> tuple[str | None, bool]:
    """The commit of the bench checkout that renders the page, and whether its tracked
    files differ from it (a page made from uncommitted code says so)."""
    commit = _git("rev-parse", "HEAD", timeout=10)
    status = _git("status", "--porcelain", "--untracked-files=no", timeout=60) if commit else None
    return commit or None, bool(status)


def _run_folder(result: dict) -> Path | None:
    """Where a run's files are: the folder the store recorded, else (results written
    before it was recorded) the folder of its absolute per-target ranks file."""
    if result.get("run_dir"):
        return Path(result["run_dir"])
    for key in ("test_rr_file", "checkpoint"):
        name = result.get(key)
        if name and Path(name).is_absolute():
            return Path(name).parent.parent if key == "checkpoint" else Path(name).parent
    return None


def _href(target: Path, page_dir: Path) -> str:
    """A link to `target` relative to the page, so a copied folder tree keeps working."""
    rel = os.path.relpath(target.resolve(), page_dir.resolve())
    return urllib.parse.quote(Path(rel).as_posix())


def _logs(folder: Path, result: dict) -> list[Path]:
    """Log files of a run: *.log in its folder, and W&B's console capture (output.log)
    or, failing that, its W&B folder."""
    found = sorted(folder.glob("*.log"))
    if result.get("wandb_dir"):
        wandb_dir = folder / result["wandb_dir"]
        if (wandb_dir / "output.log").exists():
            found.append(wandb_dir / "output.log")
        elif wandb_dir.exists():
            found.append(wandb_dir)
    return found


RUN_COPIES = "runs"  # <leaderboard folder>/runs/<run_id>/: the rows' provenance files
COPY_LIMIT = 2 << 20  # bytes; a larger log stays where it is and is linked there


def publish_run_files(tables: list[dict], out: Path) -> None:
    """Copy each row's run files (identity, config, result, logs; never checkpoints) into
    `out/runs/<run_id>/`, so a published leaderboard folder links only inside itself and
    its links work in a clone without the runs. A run whose folder is gone keeps the copy
    an earlier publication made; copies of runs no table lists are removed."""
    root = out / RUN_COPIES
    wanted = set()
    for t in tables:
        for e in t.get("rows", []):
            for result in e.get("runs") or []:
                name = _copy_name(result)
                if not name:
                    continue
                wanted.add(name)
                folder = _run_folder(result)
                if (
                    folder is None
                    or not folder.is_dir()
                    or folder.resolve() == (root / name).resolve()
                ):
                    continue
                files = [folder / n for n in ("identity.json", "config.yaml", "result.json")]
                for path in [*files, *_logs(folder, result)]:
                    if path.is_file() and path.stat().st_size <= COPY_LIMIT:
                        target = root / name / path.relative_to(folder)
                        target.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copyfile(path, target)
    if root.is_dir():
        for stale in root.iterdir():
            if stale.name not in wanted:
                if stale.is_dir() and not stale.is_symlink():
                    remove_tree(stale, root)
                else:
                    stale.unlink()


def _copy_name(result: dict) -> str | None:
    """The folder name of a run's published copy: its run id, prefixed by its study for a
    sweep's final run (every study names its finals final-t<trial>-s<seed>)."""
    run_id = str(result.get("run_id", ""))
    study = str(result.get("study") or "")
    name = f"{study}--{run_id}" if study else run_id
    if not run_id or "/" in name or name.startswith("."):
        return None
    return name


def _published(result: dict, page_dir: Path) -> Path | None:
    name = _copy_name(result)
    copy = page_dir / RUN_COPIES / name if name else None
    return copy if copy is not None and copy.is_dir() else None


def _run_links(e: dict, page_dir: Path) -> str:
    """Per seed: links to the run's identity (its configuration), config.yaml,
    result.json and logs; a run whose folder is not here is named, not linked."""
    parts = []
    for result in e.get("runs") or []:
        seed = html.escape(str(result.get("seed", "?")))
        run_id = str(result.get("run_id", ""))
        folder = _published(result, page_dir) or _run_folder(result)
        if folder is None or not folder.is_dir():
            title = f"{run_id}: run folder {folder or 'not recorded'}"
            parts.append(
                f'<span class="run missing" title="{html.escape(title)}">'
                f"s{seed}: folder absent</span>"
            )
            continue
        links = []
        for label, name in (
            ("config", "identity.json"),
            ("yaml", "config.yaml"),
            ("result", "result.json"),
        ):
            if (folder / name).exists():
                links.append(f'<a href="{_href(folder / name, page_dir)}">{label}</a>')
        for log in _logs(folder, result):
            links.append(f'<a class="log" href="{_href(log, page_dir)}">log</a>')
        commit = result.get("git_commit")
        title = run_id + (f", commit {commit[:12]}" if commit else "")
        parts.append(
            f'<span class="run" title="{html.escape(title)}">s{seed}: {" ".join(links) or "empty"}</span>'
        )
    return "<br>".join(parts) or DASH


# ------------------------------------------------------------------ protocol card


def _protocol_summary(name: str) -> tuple[str, int | None]:
    """What the protocol does, from its registered class: the first paragraph of its
    module's docstring and its one-line description; its recipe version."""
    from bench.datasets.protocols import get_protocol
    from bench.errors import BenchError

    try:
        protocol = get_protocol(name)
    except BenchError:  # an unknown or since-renamed protocol still gets its card
        return "not a registered protocol of this bench version", None
    doc = inspect.getmodule(type(protocol)).__doc__ or ""
    first = " ".join(doc.strip().split("\n\n")[0].split())
    first = re.sub(rf"^{re.escape(name)}:\s*", "", first)
    text = first[:1].upper() + first[1:] if first else ""
    description = getattr(protocol, "description", "")
    if description:
        text = f"{text} ({description})" if text else description
    return text, getattr(protocol, "version", None)


def _artifact_meta(t: dict) -> dict:
    """The artifact's meta.json (counts, parameters) for the table, found relative to the
    working folder or to an ancestor of a run folder (where `cache/` usually sits)."""
    for e in t["rows"]:
        name = e.get("artifact")
        if not name:
            continue
        path = Path(name)
        candidates = [path] if path.is_absolute() else [Path.cwd() / path]
        if not path.is_absolute():
            for result in e.get("runs") or []:
                folder = _run_folder(result)
                if folder is not None:
                    candidates += [parent / path for parent in list(folder.parents)[:4]]
        for candidate in candidates:
            meta = candidate / "meta.json"
            if meta.exists():
                try:
                    return json.loads(meta.read_text())
                except (OSError, ValueError):
                    continue
    return {}


def _protocol_params(t: dict, meta: dict) -> dict | None:
    for e in t["rows"]:
        for result in e.get("runs") or []:
            if result.get("protocol_params"):
                return result["protocol_params"]
    return meta.get("params")


def _runs_line(t: dict) -> str:
    runs = [r for e in t["rows"] for r in e.get("runs") or []]
    finished = sorted(r["finished_at"][:10] for r in runs if r.get("finished_at"))
    commits = sorted({r["git_commit"][:8] for r in runs if r.get("git_commit")})
    text = f"{len(runs)} runs"
    if finished:
        span = finished[0] if finished[0] == finished[-1] else f"{finished[0]} to {finished[-1]}"
        text += f", finished {span}"
    if commits:
        shown = ", ".join(commits[:6]) + (
            f" and {len(commits) - 6} more" if len(commits) > 6 else ""
        )
        text += f", from bench commit{'s' if len(commits) > 1 else ''} {shown}"
    return text


def _card(t: dict) -> str:
    meta = _artifact_meta(t)
    summary, version = _protocol_summary(t["protocol"])
    version = meta.get("protocol_version", version)
    params = _protocol_params(t, meta)
    counts = meta.get("counts") or {}
    total, test = counts.get("total") or {}, counts.get("test") or {}
    unit = "sessions" if str(t["protocol"]).startswith("session") else "users"
    items = []

    def item(label: str, value: str, cls: str = "", data: str = "") -> None:
        attr = f' class="{cls}"' if cls else ""
        items.append(f"<dt>{label}</dt><dd{attr}{data}>{value}</dd>")

    name = f'<b class="protocol-name">{html.escape(t["protocol"])}</b>'
    if version is not None:
        name += f" (version {version})"
    item("Protocol", f"{name}: {html.escape(summary)}")
    item("Hash", f"<code>{html.escape(t['protocol_hash'])}</code>", "protocol-hash")
    item(
        "Parameters",
        ", ".join(
            f"<code>{html.escape(k)}={html.escape(json.dumps(v))}</code>"
            for k, v in sorted(params.items())
        )
        if params
        else "not recorded",
    )
    data = f"{html.escape(t['dataset'])}, target {html.escape(str(t['target']))}"
    if t["synthetic"]:
        data += ' <b class="synthetic">SYNTHETIC</b>'
    if t["data_fingerprint"]:
        data += f", raw-data fingerprint <code>{html.escape(t['data_fingerprint'])}</code>"
    item("Data", data)
    targets = t["targets"]
    item(
        "Test targets",
        f"{targets:,}" if targets else "unknown",
        "test-targets",
        f' data-value="{targets}"' if targets else "",
    )
    if t["repeat_share"] is not None:
        item("Repeat share", f"{100 * t['repeat_share']:.1f}% of test targets were in the history")
    if total:
        sizes = [
            f"{total[k]:,} {label}"
            for k, label in (("items", "items"), ("sequences", unit))
            if total.get(k)
        ]
        if total.get("events"):
            sizes.append(f"{total['events']:,} events")
        item("Size", ", ".join(sizes))
    if test.get("items"):
        item("Test items", f"{test['items']:,} distinct items among the test examples")
    item("Footing", html.escape(_facts_line(t)))
    item("Floors", html.escape(_floor_line(t)))
    item("Coverage", html.escape(_coverage_line(t)))
    item("Runs", html.escape(_runs_line(t)))
    return (
        f'<dl class="card" data-protocol="{html.escape(t["protocol"])}" '
        f'data-hash="{html.escape(t["protocol_hash"])}">{"".join(items)}</dl>'
    )


# ------------------------------------------------------------------ tables


def _num(x: float | None, fmt: str = "{:.4f}") -> tuple[str, str]:
    """(shown text, sort key) of a number; a dash and an empty key where there is none."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return DASH, ""
    return fmt.format(x).replace("-", "−"), repr(float(x))


def _row_interval(e: dict) -> tuple[float, float] | None:
    return None if e.get("resampled") is None else _quantiles(e["resampled"])


def _floor_status(e: dict) -> str:
    if e["floor"] is None:
        return DASH
    if e["floor"] in ("beats floors", "below floor"):
        return f"{e['floor']} ({e['vs_floor']['floor']})"
    return "floor" if e["floor"] == "floor" else "untested: no per-target ranks"


OTHER_METRICS = tuple(m for m in (*METRICS, *EXPLORE_METRICS) if m != PRIMARY)


def _columns() -> list[tuple[str, str, str]]:
    """(header, kind, explanation) of every column of the HTML tables, the NDCG@10 and
    its intervals first; kind "num" sorts by number."""
    metric_help = "test metric, mean ± sample standard deviation over seeds"
    return [
        ("#", "num", "position by test NDCG@10"),
        ("model", "text", "model name"),
        (PRIMARY, "num", metric_help),
        ("NDCG@10 low", "num", "95% bootstrap interval of the row's NDCG@10, lower bound"),
        ("NDCG@10 high", "num", "95% bootstrap interval of the row's NDCG@10, upper bound"),
        ("Δ vs top", "num", "NDCG@10 minus the top row's, over paired test targets"),
        ("Δ top low", "num", "95% paired-bootstrap interval of Δ vs top, lower bound"),
        ("Δ top high", "num", "95% paired-bootstrap interval of Δ vs top, upper bound"),
        ("Δ vs floor", "num", "NDCG@10 minus the best floor row's"),
        ("Δ floor low", "num", "95% paired-bootstrap interval of Δ vs floor, lower bound"),
        ("Δ floor high", "num", "95% paired-bootstrap interval of Δ vs floor, upper bound"),
        ("floors", "text", "standing against the best floor (named)"),
        *[(m, "num", metric_help) for m in OTHER_METRICS],
        ("runs", "text", "per seed: its configuration, result and logs"),
        ("s/epoch", "num", "training seconds per epoch"),
        ("train s", "num", "training wall seconds per seed"),
        ("budget", "text", "tuning budget spent"),
        ("training", "text", "how the row was trained"),
        ("params", "num", "trainable parameters"),
        ("seeds", "text", "seeds averaged"),
        ("hardware", "text", "where it ran"),
        ("versions", "text", "bench and torch versions"),
        ("hyperparameters", "text", "the chosen hyperparameters"),
    ]


def _cells(e: dict, position: int, page_dir: Path) -> dict[str, tuple[str, str | None]]:
    """Per column header: (inner HTML, sort key or None)."""
    hw = e["hardware"]
    vs_top, vs_floor = e["vs_top"] or {}, e["vs_floor"] or {}
    own = _row_interval(e) or (None, None)
    cells: dict[str, tuple[str, str | None]] = {
        "#": (str(position), str(position)),
        "model": (f"<b>{html.escape(e['name'])}</b>", None),
        "NDCG@10 low": _num(own[0]),
        "NDCG@10 high": _num(own[1]),
        "floors": (html.escape(_floor_status(e)), None),
        "runs": (_run_links(e, page_dir), None),
        "s/epoch": _num(e["seconds_per_epoch"], "{:.2f}"),
        "train s": _num(e["train_seconds"], "{:.1f}"),
        "budget": (html.escape(_budget_cell(e["budget"])), None),
        "training": (html.escape(e["training"]), None),
        "params": (f"{e['parameters']:,}", str(e["parameters"])),
        "seeds": (html.escape(",".join(map(str, e["seeds"]))), None),
        "hardware": (
            html.escape(
                f"{hw.get('gpu') or hw.get('cpu', '?')} ({hw.get('torch_threads', '?')} threads)"
            ),
            None,
        ),
        "versions": (
            html.escape(f"bench {e['versions'].get('bench')}, torch {e['versions'].get('torch')}"),
            None,
        ),
        "hyperparameters": (
            f"<code>{html.escape(json.dumps(e['hyperparameters'], sort_keys=True))}</code>",
            None,
        ),
    }
    for m in (*METRICS, *EXPLORE_METRICS):
        cells[m] = (html.escape(_cell(e, m)), _num(e["mean"][m] if e["n"][m] else None)[1])
    for name, d, marker in (("top", vs_top, e["top"]), ("floor", vs_floor, e["floor"] == "floor")):
        low, high = d.get("ci", (None, None))
        if marker:  # the top row, a floor row: nothing to compare with itself
            cells[f"Δ vs {name}"] = (name, "0.0" if name == "top" else "")
            cells[f"Δ {name} low"] = cells[f"Δ {name} high"] = ("", "")
        else:
            cells[f"Δ vs {name}"] = _num(d.get("diff"), "{:+.4f}")
            cells[f"Δ {name} low"] = _num(low, "{:+.4f}")
            cells[f"Δ {name} high"] = _num(high, "{:+.4f}")
    return cells


LONG_COLUMNS = {"training", "hyperparameters", "budget"}
NOWRAP_COLUMNS = {"floors", "hardware", "versions", "seeds"}
ROW_CLASSES = {"floor": "floor", "below floor": "below-floor", "untested": "below-floor"}


def _table(t: dict, page_dir: Path) -> str:
    head = "".join(
        f'<th data-type="{kind}" title="{html.escape(why)}">{html.escape(name)}</th>'
        for name, kind, why in _columns()
    )
    body = []
    for position, e in enumerate(t["rows"], start=1):
        cls = ROW_CLASSES.get(e["floor"] or "")
        attrs = f' class="{cls}"' if cls else (' class="top"' if e["top"] else "")
        cells, values = [], _cells(e, position, page_dir)
        for name, _, _ in _columns():
            inner, key = values[name]
            attr = "" if key is None else f' data-sort="{key}"'
            attr += ' class="long"' if name in LONG_COLUMNS else ""
            attr += ' class="nowrap"' if name in NOWRAP_COLUMNS else ""
            cells.append(f"<td{attr}>{inner}</td>")
        body.append(f"<tr{attrs}>{''.join(cells)}</tr>")
    return (
        f'<div class="scroll"><table class="board"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(body)}</tbody></table></div>"
    )


# ------------------------------------------------------------------ the page

SORT_JS = """
(function () {
  function key(cell, numeric) {
    var raw = cell.getAttribute('data-sort');
    if (raw === null) raw = cell.textContent.trim();
    if (!numeric) return raw.toLowerCase();
    return raw === '' ? null : parseFloat(raw);
  }
  document.querySelectorAll('table.board').forEach(function (table) {
    var heads = table.tHead.rows[0].cells;
    Array.prototype.forEach.call(heads, function (th, col) {
      th.tabIndex = 0;
      function sort() {
        var numeric = th.getAttribute('data-type') === 'num';
        // a number column starts high to low (the better rows first), text A to Z
        var current = th.getAttribute('aria-sort');
        var descending = current ? current === 'ascending' : numeric;
        Array.prototype.forEach.call(heads, function (h) { h.removeAttribute('aria-sort'); });
        th.setAttribute('aria-sort', descending ? 'descending' : 'ascending');
        var body = table.tBodies[0];
        var rows = Array.prototype.map.call(body.rows, function (row, i) {
          return { row: row, key: key(row.cells[col], numeric), index: i };
        });
        rows.sort(function (a, b) {
          if (a.key === null || b.key === null) {  // empty cells last either way
            return (a.key === null) - (b.key === null) || a.index - b.index;
          }
          var cmp = numeric ? a.key - b.key : a.key.localeCompare(b.key);
          return (descending ? -cmp : cmp) || a.index - b.index;
        });
        rows.forEach(function (r) { body.appendChild(r.row); });
      }
      th.addEventListener('click', sort);
      th.addEventListener('keydown', function (ev) {
        if (ev.key === 'Enter' || ev.key === ' ') { ev.preventDefault(); sort(); }
      });
    });
  });
  document.body.dataset.ready = "1";
})();
"""

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #1a202c; max-width: 1500px; }
h1 { margin-bottom: 0.2em; }
.provenance { color: #4a5568; font-size: 14px; }
section { border-top: 2px solid #cbd5e0; margin-top: 2.5em; padding-top: 0.5em; }
dl.card { display: grid; grid-template-columns: max-content auto; gap: 4px 16px;
  background: #f7fafc; border: 1px solid #e2e8f0; border-radius: 6px; padding: 12px 16px;
  font-size: 14px; }
dl.card dt { font-weight: 600; color: #2d3748; }
dl.card dd { margin: 0; }
.synthetic { color: #c53030; }
.plots { display: flex; flex-wrap: wrap; gap: 16px; margin: 1em 0; }
.plots svg { max-width: 100%; height: auto; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 13px; }
th, td { border: 1px solid #cbd5e0; padding: 4px 8px; text-align: left; vertical-align: top; }
td[data-sort] { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
th { background: #edf2f7; cursor: pointer; position: sticky; top: 0; white-space: nowrap; }
th[aria-sort="ascending"]::after { content: " ▲"; }
th[aria-sort="descending"]::after { content: " ▼"; }
tr.top td { background: #f0fff4; }
tr.floor td { background: #f7fafc; }
tr.below-floor td { color: #718096; font-style: italic; }
.run { white-space: nowrap; font-size: 12px; }
.run.missing { color: #a0aec0; }
td.long { min-width: 22em; font-size: 12px; }
td.long code { display: inline-block; min-width: 36em; }
td.nowrap { white-space: nowrap; }
td code { font-size: 11px; }
"""


def render_page(
    tables: list[dict], page_dir: str | Path, generated_at: datetime | None = None
) -> str:
    """index.html for `tables`, with links relative to `page_dir`, the folder it is
    written to."""
    page_dir = Path(page_dir)
    when = (generated_at or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M UTC")
    commit, dirty = _source_state()
    made = f"Generated {when} by bench"
    if commit:
        made += f' at commit <code class="commit">{commit}</code>'
        if dirty:
            made += " with uncommitted changes"
    sections = []
    for i, t in enumerate(tables):
        prefix = f"board{i}"
        plots = accuracy_plot(t, prefix) + curves_plot(t, prefix)
        sections.append(
            f'<section id="{prefix}"><h2>{html.escape(_title(t))}</h2>{_card(t)}'
            f'<div class="plots">{plots}</div>{_table(t, page_dir)}</section>'
        )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>bench leaderboard</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>{STYLE}</style></head><body>
<h1>bench leaderboard</h1>
<p class="provenance">{made}.</p>
<p>Full-ranking test metrics, mean ± sample standard deviation over seeds; the configuration
of each model was chosen on validation, among those run with the most seeds. One table per
data set, protocol variant (its hash), target and raw data. Intervals: {html.escape(SIGNIFICANCE)};
the row's own NDCG@10 interval is the bootstrap over the same resamples. Floors:
{html.escape(FLOOR_RULE)}; those rows are greyed, floor rows shaded. Click a column header to
sort (again to reverse); each row links its runs' configuration, result and logs.</p>
{"".join(sections)}
<script>{SORT_JS}</script>
</body></html>
"""
