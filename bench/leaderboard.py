"""`bench leaderboard`: the results store as tables per data set and protocol.

Markdown and CSV per (data set, protocol, target), and one static HTML page with
sortable tables and an accuracy-versus-training-cost plot (inline SVG, no CDN).
Rows from different protocols never share a table.
"""

from __future__ import annotations

import csv
import html
import json
import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from bench.errors import BenchError
from bench.results import ResultsStore
from bench.training.config import RunConfig

METRICS = ("hr@10", "hr@20", "ndcg@10", "ndcg@20", "mrr@20")
SIGNIFICANCE = "paired bootstrap over test histories (10,000 resamples, 95% CI of ΔMRR)"


# run options that never change a result: where files go, how many threads or devices
PLACEMENT_KEYS = {
    "seed",
    "run_id",
    "resume",
    "runs_dir",
    "data_dir",
    "cache_dir",
    "wandb",
    "wandb_group",
    "threads",
    "num_workers",
    "devices",
    "strategy",
}
# options of gradient training: a model that is fitted without epochs (pop, the kNN
# family) ignores them, so runs that differ only here are the same configuration
TRAINING_KEYS = {
    "max_epochs",
    "batch_size",
    "lr",
    "weight_decay",
    "patience",
    "monitor",
    "loss",
    "n_negatives",
    "training",
    "optimizer",
    "precision",
    "accelerator",
    "limit_train_batches",
}


# a run option added later defaults to the behaviour before it, so a result written
# before the option existed ran with its default
RUN_DEFAULTS = {
    name: field.default for name, field in RunConfig.model_fields.items() if not field.is_required()
}


def _config_key(result: dict) -> str:
    ignored = PLACEMENT_KEYS | (TRAINING_KEYS if result.get("epochs") == 0 else set())
    given = {**RUN_DEFAULTS, **result.get("run_config", {})}
    run = {k: v for k, v in given.items() if k not in ignored}
    return json.dumps([result.get("hyperparameters"), run], sort_keys=True, default=str)


def _pick_rows(rows: list[dict], monitor: str) -> list[dict]:
    """One group of seeds per model: the sweep's final runs if any, else, among the run
    configs with the most seeds, the one with the best mean validation score (chosen on
    valid, never on test; a lucky single seed cannot displace a config run on three)."""
    finals = [r for r in rows if r["kind"] == "final"]
    if finals:
        latest = max(finals, key=lambda r: r["created_at"])
        best = latest["result"].get("best_trial")  # a continued study may find a new best
        return [
            r
            for r in finals
            if r["study"] == latest["study"] and r["result"].get("best_trial") == best
        ]
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        if r["kind"] == "run":
            groups[_config_key(r["result"])].append(r)
    if not groups:
        return []

    def valid_score(group):
        return np.mean([g["result"]["metrics"]["valid"].get(monitor, 0.0) for g in group])

    seed_count = {key: len({r["seed"] for r in group}) for key, group in groups.items()}
    most_seeds = max(seed_count.values())
    candidates = [g for key, g in groups.items() if seed_count[key] == most_seeds]
    best = max(candidates, key=valid_score)
    latest_per_seed = {}
    for r in sorted(best, key=lambda r: r["created_at"]):
        latest_per_seed[r["seed"]] = r
    return list(latest_per_seed.values())


def _reciprocal_ranks(group: list[dict]) -> np.ndarray | None:
    arrays = []
    for r in group:
        path = r["result"].get("test_rr_file")
        if not path or not Path(path).exists():
            return None
        arrays.append(np.load(path))
    if len({a.shape for a in arrays}) != 1:
        return None
    return np.mean(arrays, axis=0)


def paired_bootstrap(a: np.ndarray, b: np.ndarray, n: int = 10_000, seed: int = 0):
    """95% CI of mean(a - b) over paired examples, and whether it excludes 0."""
    diff = a - b
    rng = np.random.default_rng(seed)
    means = np.empty(n)
    for start in range(0, n, 500):
        idx = rng.integers(0, len(diff), size=(min(500, n - start), len(diff)))
        means[start : start + len(idx)] = diff[idx].mean(axis=1)
    low, high = np.quantile(means, [0.025, 0.975])
    return float(low), float(high), bool(low > 0 or high < 0)


def build_tables(
    store: ResultsStore,
    dataset: str | None = None,
    protocol: str | None = None,
    monitor: str = "ndcg@10",
) -> list[dict]:
    """One table per (data set, protocol, protocol hash, target), rows sorted by test MRR@20."""
    rows = store.rows(dataset=dataset, protocol=protocol)
    if not rows:
        where = " ".join(x for x in (dataset, protocol) if x) or "any data set"
        raise BenchError(
            f"the results store {store.url} has no results for {where}",
            option="--results",
            hint="run `bench run` or `bench sweep` first",
        )
    by_table: dict[tuple, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        by_table[(r["dataset"], r["protocol"], r["protocol_hash"], r["target"])][r["model"]].append(
            r
        )
    tables = []
    for (ds, proto, proto_hash, target), per_model in sorted(by_table.items()):
        entries = []
        for model, model_rows in per_model.items():
            group = _pick_rows(model_rows, monitor)
            if group:
                entries.append(_summarise(model, group))
        entries.sort(key=lambda e: -e["mean"]["mrr@20"])
        _mark_significance(entries)
        synthetic = any(r["synthetic"] for m in per_model.values() for r in m)
        tables.append(
            {
                "dataset": ds,
                "protocol": proto,
                "protocol_hash": proto_hash,
                "target": target,
                "synthetic": synthetic,
                "rows": entries,
            }
        )
    return tables


def _summarise(model: str, group: list[dict]) -> dict:
    results = [g["result"] for g in sorted(group, key=lambda g: g["seed"])]
    test = [r["metrics"]["test"] for r in results]
    epochs = [r.get("epochs") for r in results]
    mean = {m: float(np.mean([t.get(m, float("nan")) for t in test])) for m in METRICS}
    # sample standard deviation over seeds (ddof=1), as papers report seed spread
    ddof = 1 if len(test) > 1 else 0
    std = {m: float(np.std([t.get(m, float("nan")) for t in test], ddof=ddof)) for m in METRICS}
    budget = results[0].get("budget") or {
        "trials": 0,
        "seconds": sum(r["train_seconds"] for r in results),
    }
    return {
        "model": model,
        "seeds": [r["seed"] for r in results],
        "mean": mean,
        "std": std,
        "seconds_per_epoch": float(np.mean([r.get("seconds_per_epoch") or 0 for r in results])),
        "train_seconds": float(np.mean([r.get("train_seconds") or 0 for r in results])),
        "budget": budget,
        "parameters": results[0].get("parameters", 0),
        "hardware": results[0].get("hardware", {}),
        "versions": results[0].get("versions", {}),
        "hyperparameters": results[0].get("hyperparameters", {}),
        "training": _training(results[0], epochs),
        "mode": _mode(results[0]),
        "epochs": epochs,
        "rr": _reciprocal_ranks(group),
    }


def _mode(result: dict) -> str:
    if result.get("epochs") == 0:
        return "fit"
    return (result.get("run_config") or {}).get("training", "prefixes")


def _training(result: dict, epochs: list) -> str:
    """How a row was trained: what its numbers depend on besides the hyperparameters."""
    run = result.get("run_config") or {}
    if result.get("epochs") == 0:
        return "fit, no epochs"
    if "max_epochs" not in run:
        return "n/a"
    return (
        f"{run.get('training', 'prefixes')}, batch {run.get('batch_size')}, lr {run.get('lr')}, "
        f"<= {run.get('max_epochs')} epochs, patience {run.get('patience')} on "
        f"{run.get('monitor')}, epochs {','.join(map(str, epochs))}"
    )


def _mark_significance(entries: list[dict]) -> None:
    if not entries:
        return
    top = entries[0]
    for e in entries:
        e["vs_top"] = None
        if e is top or top["rr"] is None or e["rr"] is None or len(top["rr"]) != len(e["rr"]):
            continue
        low, high, significant = paired_bootstrap(top["rr"], e["rr"])
        e["vs_top"] = {"ci": [low, high], "significant": significant}


def _cell(e: dict, m: str) -> str:
    return f"{e['mean'][m]:.4f} ± {e['std'][m]:.4f}"


def _sig(e: dict) -> str:
    if e["vs_top"] is None:
        return "top" if e.get("_top") else "n/a"
    return "yes" if e["vs_top"]["significant"] else "no"


COLUMNS = [
    "model",
    *METRICS,
    "s/epoch",
    "budget",
    "training",
    "params",
    "seeds",
    "worse than top?",
    "hardware",
    "versions",
    "hyperparameters",
]


def _row_values(e: dict, top: bool) -> list[str]:
    e["_top"] = top
    budget = e["budget"]
    hw = e["hardware"]
    return [
        e["model"],
        *[_cell(e, m) for m in METRICS],
        f"{e['seconds_per_epoch']:.2f}",
        (
            f"{budget['trials']} trials, {budget.get('seconds', 0):.0f} s"
            if budget.get("trials")
            else f"untuned, {budget.get('seconds', 0):.0f} s"
        ),
        e["training"],
        f"{e['parameters']:,}",
        ",".join(map(str, e["seeds"])),
        _sig(e),
        f"{hw.get('gpu') or hw.get('cpu', '?')} ({hw.get('torch_threads', '?')} threads)",
        f"bench {e['versions'].get('bench')}, torch {e['versions'].get('torch')}",
        json.dumps(e["hyperparameters"], sort_keys=True),
    ]


def _title(t: dict) -> str:
    label = " (SYNTHETIC data)" if t["synthetic"] else ""
    return (
        f"{t['dataset']}{label} · {t['protocol']} [{t['protocol_hash'][:8]}] · target {t['target']}"
    )


def write_leaderboards(tables: list[dict], out: str | Path) -> list[Path]:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for t in tables:
        stem = f"{t['dataset']}__{t['protocol']}__{t['target']}"
        rows = [_row_values(e, i == 0) for i, e in enumerate(t["rows"])]
        md = [
            f"# {_title(t)}",
            "",
            f"Significance: {SIGNIFICANCE}.",
            "",
            "| " + " | ".join(COLUMNS) + " |",
            "|" + "---|" * len(COLUMNS),
        ]
        md += ["| " + " | ".join(v.replace("|", "\\|") for v in r) + " |" for r in rows]
        (out / f"{stem}.md").write_text("\n".join(md) + "\n")
        with open(out / f"{stem}.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(
                ["dataset", "protocol", "protocol_hash", "target", "synthetic", *COLUMNS]
            )
            for r in rows:
                writer.writerow(
                    [
                        t["dataset"],
                        t["protocol"],
                        t["protocol_hash"],
                        t["target"],
                        t["synthetic"],
                        *r,
                    ]
                )
        written += [out / f"{stem}.md", out / f"{stem}.csv"]
    summary = out / "summary.md"
    summary.write_text(render_summary(tables))
    written.append(summary)
    page = out / "index.html"
    page.write_text(render_html(tables))
    written.append(page)
    return written


SUMMARY_METRICS = ("hr@10", "ndcg@10", "mrr@20")


def render_summary(tables: list[dict]) -> str:
    """Every board in one short page: the headline metrics, seeds and epochs per model."""
    lines = [
        "# Leaderboard summary",
        "",
        "Test metrics of the best-validation checkpoint, mean ± sample standard deviation over "
        "seeds; full tables with significance, budgets and hyperparameters are in the files "
        "beside this one.",
    ]
    for t in tables:
        lines += [
            "",
            f"## {_title(t)}",
            "",
            "| model | " + " | ".join(m.upper() for m in SUMMARY_METRICS) + " | seeds | epochs run "
            "| training |",
            "|---|" + "---|" * (len(SUMMARY_METRICS) + 3),
        ]
        for e in t["rows"]:
            cells = [
                e["model"],
                *[_cell(e, m) for m in SUMMARY_METRICS],
                ",".join(map(str, e["seeds"])),
                ",".join(map(str, e["epochs"])),
                e["mode"],
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _svg_plot(t: dict, width: int = 560, height: int = 320) -> str:
    """NDCG@10 against seconds per epoch (log scale), one labelled point per model."""
    pts = [(max(e["seconds_per_epoch"], 1e-3), e["mean"]["ndcg@10"], e["model"]) for e in t["rows"]]
    if not pts:
        return ""
    pad = 50
    xs = [math.log10(p[0]) for p in pts]
    ys = [p[1] for p in pts]
    x0, x1 = min(xs) - 0.2, max(xs) + 0.2
    y0, y1 = 0.0, max(ys) * 1.15 or 1.0

    def sx(x):
        return pad + (x - x0) / (x1 - x0) * (width - 2 * pad)

    def sy(y):
        return height - pad - (y - y0) / (y1 - y0) * (height - 2 * pad)

    parts = [
        f'<svg class="plot" width="{width}" height="{height}" role="img" '
        f'aria-label="NDCG@10 versus training seconds per epoch">',
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#fff"/>',
        f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="#333"/>',
        f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" stroke="#333"/>',
        f'<text x="{width / 2}" y="{height - 12}" text-anchor="middle">training seconds per epoch (log)</text>',
        f'<text x="14" y="{height / 2}" transform="rotate(-90 14 {height / 2})" text-anchor="middle">test NDCG@10</text>',
    ]
    for (sec, y, name), x in zip(pts, xs, strict=True):
        parts.append(
            f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="6" fill="#2b6cb0">'
            f"<title>{html.escape(name)}: {y:.4f}, {sec:.2f} s/epoch</title></circle>"
        )
        parts.append(
            f'<text x="{sx(x) + 8:.1f}" y="{sy(y) - 8:.1f}" font-size="12">{html.escape(name)}</text>'
        )
    for tick in sorted({round(x0 + 0.2, 2), round(x1 - 0.2, 2)}):
        parts.append(
            f'<text x="{sx(tick):.1f}" y="{height - pad + 16}" text-anchor="middle" '
            f'font-size="11">{10**tick:.3g} s</text>'
        )
    for frac in (0, 0.5, 1):
        yv = y0 + frac * (y1 - y0)
        parts.append(
            f'<text x="{pad - 6}" y="{sy(yv) + 4:.1f}" text-anchor="end" font-size="11">{yv:.3f}</text>'
        )
    parts.append("</svg>")
    return "\n".join(parts)


_SORT_JS = """
document.querySelectorAll('table.board').forEach(function (table) {
  table.querySelectorAll('th').forEach(function (th, col) {
    th.addEventListener('click', function () {
      var body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      var asc = th.dataset.asc !== 'true';
      th.dataset.asc = asc;
      rows.sort(function (a, b) {
        var x = a.cells[col].textContent, y = b.cells[col].textContent;
        var nx = parseFloat(x.replace(/,/g, '')), ny = parseFloat(y.replace(/,/g, ''));
        var cmp = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
        return asc ? cmp : -cmp;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
});
document.body.dataset.ready = "1";
"""


def render_html(tables: list[dict]) -> str:
    sections = []
    for t in tables:
        head = "".join(f"<th>{html.escape(c)}</th>" for c in COLUMNS)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in _row_values(e, i == 0)) + "</tr>"
            for i, e in enumerate(t["rows"])
        )
        sections.append(
            f"<section><h2>{html.escape(_title(t))}</h2>{_svg_plot(t)}"
            f'<table class="board"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></section>'
        )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>bench leaderboard</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0 2em; font-size: 13px; }}
th, td {{ border: 1px solid #ccc; padding: 4px 8px; text-align: left; }}
th {{ background: #edf2f7; cursor: pointer; }}
tbody tr:first-child {{ background: #f0fff4; }}
</style></head><body>
<h1>bench leaderboard</h1>
<p>Mean ± sample std over seeds of full-ranking test metrics; the configuration of each
model was chosen on validation, among those run with the most seeds. Significance against the top row: {html.escape(SIGNIFICANCE)}.
Click a column header to sort.</p>
{"".join(sections)}
<script>{_SORT_JS}</script>
</body></html>
"""


def log_tables(tables: list[dict], save_dir: Path) -> list[str]:
    """Log each leaderboard table to W&B as a wandb.Table (offline unless configured)."""
    from bench.tracking import log_table

    dirs = []
    for t in tables:
        rows = [_row_values(e, i == 0) for i, e in enumerate(t["rows"])]
        name = f"leaderboard-{t['dataset']}-{t['protocol']}-{t['target']}"
        dirs.append(
            log_table(
                name, COLUMNS, rows, group="leaderboard", save_dir=save_dir, job_type="leaderboard"
            )
        )
    return dirs
