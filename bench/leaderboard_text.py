"""Leaderboard tables as text: Markdown and numeric CSV per table, summary.md, and the
lines every rendering shares (title, footing, floors, coverage, tuned rows)."""

from __future__ import annotations

import csv
import json
import math
import re
from pathlib import Path

import numpy as np

from bench.leaderboard_tables import (
    EXPLORE_METRICS,
    FLOOR_RULE,
    FLOORS,
    METRICS,
    PRIMARY,
    SIGNIFICANCE,
    _seed_spread,
    epochs_text,
    rank_changes,
)

DASH = "–"


def _cell(e: dict, m: str) -> str:
    if not e["n"][m]:
        return DASH
    # one seed, or a fitted model's seeds (a fit draws no random numbers): no spread to show
    if e["n"][m] == 1 or (e["mode"] == "fit" and e["std"][m] == 0):
        return f"{e['mean'][m]:.4f}"
    return f"{e['mean'][m]:.4f} ± {e['std'][m]:.4f}"


def _signed(x: float) -> str:
    return f"{x:+.4f}".replace("-", "−")


def _interval(d: dict) -> str:
    low, high = d["ci"]
    return f"{_signed(d['diff'])} [{_signed(low)}, {_signed(high)}]"


def _vs_top(e: dict) -> str:
    if e["top"]:
        return "top"
    return "n/a" if e["vs_top"] is None else _interval(e["vs_top"])


def _vs_floor(e: dict) -> str:
    if e["floor"] is None:
        return DASH
    if e["floor"] == "floor":
        return "floor"
    if e["floor"] == "untested":
        return "untested: no per-target ranks"
    if e["floor"] == "beats floors":
        label = "beats floors"
    elif e["vs_floor"]["ci"][1] >= 0:  # level with the best floor within the interval
        label = "below floor (not a learned result; not significantly above it)"
    else:
        label = "below floor (not a learned result)"
    return f"{label}: {_interval(e['vs_floor'])} vs {e['vs_floor']['floor']}"


COLUMNS = [
    "model",
    *METRICS,
    *EXPLORE_METRICS,
    "s/epoch",
    "budget",
    "training",
    "params",
    "seeds",
    "Δ NDCG@10 vs top [95% CI]",
    "vs floors",
    "hardware",
    "versions",
    "hyperparameters",
]


STOP_TEXT = {
    "trials": "trials",
    "cpu_seconds": "CPU seconds",
    "converged": "convergence",
    "timeout": "timeout",
}


def _budget_cell(budget: dict) -> str:
    """What tuning cost against what it was given: trials, wall and CPU seconds, and what
    ended the search (rows tuned before CPU time was recorded show what they have)."""
    if not budget.get("trials"):
        about = "~" if budget.get("estimated") else ""  # a resumed run's earlier epochs
        return f"untuned, {about}{budget.get('seconds', 0):.0f} s"

    def of(spent: float, given) -> str:
        return f"{spent:.0f}" + (f" of {given:.0f}" if given else "")

    text = f"{of(budget['trials'], budget.get('requested_trials'))} trials"
    text += f", {budget.get('seconds', 0):.0f} s"
    if budget.get("cpu_seconds") is not None:
        text += f", {of(budget['cpu_seconds'], budget.get('requested_cpu_seconds'))} CPU s"
    if budget.get("stopped_by"):
        text += f", stopped by {STOP_TEXT.get(budget['stopped_by'], budget['stopped_by'])}"
    if budget.get("best_cut_by_budget"):
        text += " (its best trial's training ended by the CPU budget, at its best epoch so far"
        if budget.get("best_cut_after_epochs"):
            text += f", after {budget['best_cut_after_epochs']} epochs: the finals' cap"
        text += ")"
    return text


def _row_values(e: dict) -> list[str]:
    hw = e["hardware"]
    return [
        e["name"],
        *[_cell(e, m) for m in (*METRICS, *EXPLORE_METRICS)],
        f"{e['seconds_per_epoch']:.2f}",
        _budget_cell(e["budget"]),
        e["training"],
        f"{e['parameters']:,}",
        ",".join(map(str, e["seeds"])),
        _vs_top(e),
        _vs_floor(e),
        f"{hw.get('gpu') or hw.get('cpu', '?')} ({hw.get('torch_threads', '?')} threads)",
        f"bench {e['versions'].get('bench')}, torch {e['versions'].get('torch')}",
        json.dumps(e["hyperparameters"], sort_keys=True),
    ]


def _number(x) -> object:
    """A CSV cell: the number itself, empty where there is none."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return ""
    return x


def _csv_header() -> list[str]:
    stats = [f"{m}_{part}" for m in (*METRICS, *EXPLORE_METRICS) for part in ("mean", "std", "n")]
    return [
        "dataset",
        "protocol",
        "protocol_hash",
        "target",
        "data_fingerprint",
        "synthetic",
        "test_targets",
        "repeat_share",
        "top_ndcg@10_low",
        "top_ndcg@10_high",
        "position",
        "model",
        "tuned",
        *stats,
        "ndcg@10_minus_top",
        "ndcg@10_minus_top_low",
        "ndcg@10_minus_top_high",
        "below_top",
        "floor_status",
        "best_floor",
        "ndcg@10_minus_floor",
        "ndcg@10_minus_floor_low",
        "ndcg@10_minus_floor_high",
        "seconds_per_epoch",
        "train_seconds",
        "budget_trials",
        "budget_requested_trials",
        "budget_seconds",
        "budget_cpu_seconds",
        "budget_requested_cpu_seconds",
        "budget_stopped_by",
        "training",
        "parameters",
        "seeds",
        "hardware",
        "versions",
        "hyperparameters",
    ]


def _csv_row(t: dict, position: int, e: dict) -> list:
    top_low, top_high = t["top_ci"] or (None, None)
    vs_top, vs_floor = e["vs_top"] or {}, e["vs_floor"] or {}
    stats = [
        _number(v)
        for m in (*METRICS, *EXPLORE_METRICS)
        for v in (e["mean"][m], e["std"][m], e["n"][m])
    ]
    return [
        t["dataset"],
        t["protocol"],
        t["protocol_hash"],
        t["target"],
        t["data_fingerprint"] or "",
        t["synthetic"],
        _number(t["targets"]),
        _number(t["repeat_share"]),
        _number(top_low),
        _number(top_high),
        position,
        e["model"],
        e["tuned"],
        *stats,
        _number(vs_top.get("diff")),
        *[_number(x) for x in vs_top.get("ci", (None, None))],
        "" if not vs_top else vs_top["significant"] and vs_top["ci"][1] < 0,
        e["floor"] or "",
        vs_floor.get("floor", ""),
        _number(vs_floor.get("diff")),
        *[_number(x) for x in vs_floor.get("ci", (None, None))],
        e["seconds_per_epoch"],
        e["train_seconds"],
        e["budget"].get("trials", 0),
        _number(e["budget"].get("requested_trials")),
        e["budget"].get("seconds", 0),
        _number(e["budget"].get("cpu_seconds")),
        _number(e["budget"].get("requested_cpu_seconds")),
        e["budget"].get("stopped_by") or "",
        e["training"],
        e["parameters"],
        ",".join(map(str, e["seeds"])),
        json.dumps(e["hardware"], sort_keys=True),
        json.dumps(e["versions"], sort_keys=True),
        json.dumps(e["hyperparameters"], sort_keys=True),
    ]


def _title(t: dict) -> str:
    label = " (SYNTHETIC data)" if t["synthetic"] else ""
    data = f" · data {t['data_fingerprint'][:8]}" if t["data_fingerprint"] else ""
    return (
        f"{t['dataset']}{label} · {t['protocol']} [{t['protocol_hash'][:8]}] · "
        f"target {t['target']}{data}"
    )


RANKABLE_HALF_WIDTH = 0.05  # wider, and the table's gaps between models are mostly noise


def _facts_line(t: dict) -> str:
    """The table's footing in one sentence; a table whose top row's 95% interval is wider
    than ±RANKABLE_HALF_WIDTH says it checks a recipe rather than ranks models."""
    parts = [f"{t['targets']:,} test targets" if t["targets"] else "test targets unknown"]
    if t["repeat_share"] is not None:
        parts.append(f"repeat share {100 * t['repeat_share']:.1f}%")
    if t["rows"] and t["top_ci"]:
        top = t["rows"][0]
        low, high = t["top_ci"]
        text = f"top row ({top['name']}) NDCG@10 {top['mean'][PRIMARY]:.4f}, 95% CI [{low:.4f}, {high:.4f}]"
        for name, (mean, lo, hi) in t["top_split_ci"].items():
            text += f"; on {name} targets {mean:.4f} [{lo:.4f}, {hi:.4f}]"
        parts.append(text)
        half_width = (high - low) / 2
        if half_width > RANKABLE_HALF_WIDTH:
            return (
                "; ".join(parts) + ". A recipe check, too small to rank models: the top "
                f"row's interval spans ±{half_width:.3f} NDCG@10, wider than "
                f"±{RANKABLE_HALF_WIDTH}."
            )
    return "; ".join(parts) + "."


SEEDS_WANTED = 3  # seeds a trained model's row should have; fewer is marked


def _coverage_line(t: dict) -> str:
    """What the table still lacks: registered models with no row yet, and trained rows
    with fewer seeds than wanted, so an incomplete table says so."""
    from bench.models.registry import list_models

    missing = sorted(set(list_models()) - {e["model"] for e in t["rows"]})
    few = [
        f"{e['name']} ({len(e['seeds'])})"
        for e in t["rows"]
        if e["mode"] != "fit" and len(e["seeds"]) < SEEDS_WANTED
    ]
    capped = [
        f"{e['name']} ({len(e['capped_seeds'])} of {len(e['seeds'])})"
        for e in t["rows"]
        if e.get("capped_seeds")
    ]
    parts = []
    if not missing and not few:
        parts.append(
            f"Every registered model has a row; every trained row has {SEEDS_WANTED} seeds."
        )
    if missing:
        parts.append("Not run yet: " + ", ".join(missing) + ".")
    if few:
        parts.append(f"Fewer than {SEEDS_WANTED} seeds so far: " + ", ".join(few) + ".")
    if capped:
        parts.append(
            "Ended by the epoch cap, not by early stopping (seeds), so possibly still "
            "improving: " + ", ".join(capped) + "."
        )
    return " ".join(parts)


def _floor_line(t: dict) -> str:
    if not t["floors"]:
        return (
            f"No floor model ({', '.join(FLOORS)}) in this table: no row is shown to be a "
            "learned result."
        )
    beat = ", ".join(t["beats_floors"]) or "none"
    return f"Floors present: {', '.join(t['floors'])}. Beat every floor with significance: {beat}."


def _valid_scores(e: dict) -> list[float]:
    return [r["metrics"]["valid"][PRIMARY] for r in e["runs"] if PRIMARY in r["metrics"]["valid"]]


def _validation_text(e: dict, curve: list | None, default: dict | None) -> str:
    """The search's best validation score against the validation scores of the final runs
    (and of the default row): how much the best trial's score owed to luck."""
    finals = _valid_scores(e)
    if not curve or not finals:
        return ""
    text = (
        f"; validation {PRIMARY}: best trial {curve[-1][1]:.4f}, its final runs {_spread(finals)}"
    )
    if default and _valid_scores(default):
        text += f", default row {_spread(_valid_scores(default))}"
    return text


def _spread(values: list[float]) -> str:
    spread = _seed_spread(values)
    if not spread:  # one run, or one deterministic result
        return f"{values[0]:.4f}"
    return f"{np.mean(values):.4f} ± {spread:.4f}"


def _tuned_lines(t: dict) -> list[str]:
    """Under a table with tuned rows: each one's budget, the values its study chose and
    what it searched, and how the ranks moved from the default rows to the tuned ones."""
    tuned = [e for e in t["rows"] if e["tuned"]]
    if not tuned:
        return []
    lines = [
        "",
        "## Tuned rows",
        "",
        "Each model was tuned on the same budget: trials, CPU seconds or convergence (a run "
        "of trials without a better validation score), whichever ended the search first, "
        "with median pruning on validation NDCG@10 per epoch; its best trial on validation "
        "was re-run with the seeds shown. Default rows keep each model's defaults. The "
        "best of many noisy validation scores overstates its configuration (the winner's "
        "curse): each row gives that score beside its final runs' validation mean, and the "
        "default row's.",
        "",
    ]
    defaults = {e["model"]: e for e in t["rows"] if not e["tuned"]}
    for e in tuned:
        space = e["search_space"]
        run = e["runs"][0].get("run_config") or {}
        chosen = {k: v for k, v in e["hyperparameters"].items() if k in (space or {})}
        if "lr" in (space or {}):
            chosen["lr"] = run.get("lr")
        chosen = {k: float(f"{v:.4g}") if isinstance(v, float) else v for k, v in chosen.items()}
        searched = (
            "not recorded"  # tuned before studies recorded their space
            if space is None
            else "; ".join(f"{k}: {v}" for k, v in space.items()) or "nothing (no hyperparameters)"
        )
        lines.append(
            f"- **{e['name']}** ({_budget_cell(e['budget'])}): chosen "
            f"{json.dumps(chosen, sort_keys=True, default=str)}; searched {searched}"
            + _validation_text(e, t["curves"].get(e["model"]), defaults.get(e["model"]))
        )
    moves = rank_changes(t)
    if moves:
        lines += [
            "",
            "Rank among default rows → rank among tuned rows (NDCG@10): "
            + ", ".join(f"{model} {before} → {after}" for model, before, after in moves)
            + ".",
        ]
    return lines


def _stem(t: dict) -> str:
    parts = [t["dataset"], t["protocol"], t["target"], t["protocol_hash"][:8]]
    if t["data_fingerprint"]:
        parts.append(f"data-{t['data_fingerprint'][:8]}")
    return "__".join(re.sub(r"[^A-Za-z0-9._=+-]", "-", str(p)) for p in parts)


def _heading(t: dict, level: str) -> list[str]:
    """A table's title and footing, floors and coverage lines, as every text shows them."""
    return [
        f"{level} {_title(t)}",
        "",
        _facts_line(t),
        "",
        _floor_line(t),
        "",
        _coverage_line(t),
        "",
    ]


def write_text_files(tables: list[dict], out: str | Path) -> list[Path]:
    """`<dataset>__<protocol>__<target>__<hash8>[__data-<fp8>].md/.csv` per table, no
    two tables sharing a name, and summary.md over all of them."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written, used = [], set()
    for t in tables:
        stem = base = _stem(t)
        suffix = 2
        while stem in used:  # names cut to 8 hex digits could meet; never overwrite
            stem, suffix = f"{base}__{suffix}", suffix + 1
        used.add(stem)
        rows = [_row_values(e) for e in t["rows"]]
        md = [
            *_heading(t, "#"),
            f"Significance: {SIGNIFICANCE}. Floors: {FLOOR_RULE}.",
            "",
            "| " + " | ".join(COLUMNS) + " |",
            "|" + "---|" * len(COLUMNS),
        ]
        md += ["| " + " | ".join(v.replace("|", "\\|") for v in r) + " |" for r in rows]
        md += _tuned_lines(t)
        (out / f"{stem}.md").write_text("\n".join(md) + "\n")
        with open(out / f"{stem}.csv", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(_csv_header())
            for position, e in enumerate(t["rows"], start=1):
                writer.writerow(_csv_row(t, position, e))
        written += [out / f"{stem}.md", out / f"{stem}.csv"]
    summary = out / "summary.md"
    summary.write_text(render_summary(tables))
    written.append(summary)
    return written


SUMMARY_METRICS = ("hr@10", "ndcg@10", "mrr@20")


def render_summary(tables: list[dict]) -> str:
    """Every board in one short page: the headline metrics, seeds and epochs per model,
    each table's footing, and which models beat every floor."""
    lines = [
        "# Leaderboard summary",
        "",
        "Test metrics of the best-validation checkpoint, mean ± sample standard deviation over "
        "seeds; full tables with budgets and hyperparameters are in the files beside this one. "
        f"Significance: {SIGNIFICANCE}. Floors: {FLOOR_RULE}.",
    ]
    for t in tables:
        lines += [
            "",
            *_heading(t, "##"),
            "| model | " + " | ".join(m.upper() for m in SUMMARY_METRICS) + " | seeds | epochs run "
            "| training | explore NDCG@10 | Δ NDCG@10 vs top | vs floors |",
            "|---|" + "---|" * (len(SUMMARY_METRICS) + 6),
        ]
        for e in t["rows"]:
            cells = [
                e["name"],
                *[_cell(e, m) for m in SUMMARY_METRICS],
                ",".join(map(str, e["seeds"])),
                epochs_text(e["epochs"], e["runs"]),
                e["mode"],
                _cell(e, "explore_ndcg@10"),
                _vs_top(e),
                _vs_floor(e),
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def log_tables(tables: list[dict], save_dir: Path) -> list[str]:
    """Log each leaderboard table to W&B as a wandb.Table (offline unless configured); each
    table is its own W&B run, so variants sharing a name do not overwrite each other."""
    from bench.tracking import log_table

    dirs = []
    for t in tables:
        rows = [_row_values(e) for e in t["rows"]]
        name = f"leaderboard-{t['dataset']}-{t['protocol']}-{t['target']}"
        dirs.append(
            log_table(
                name, COLUMNS, rows, group="leaderboard", save_dir=save_dir, job_type="leaderboard"
            )
        )
    return dirs
