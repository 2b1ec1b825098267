"""`bench leaderboard`: the results store as tables that can be cited.

One table per data set, protocol variant (name and hash), target and raw-data fingerprint,
so two variants of one data set never share a table or a file. Each table states how many
test targets it rests on, the data's repeat share, and the 95% interval of its top row's
NDCG@10; each row, the paired-bootstrap interval of its NDCG@10 minus the top row's and
whether it beats the floor models (pop, repeat, sr) with significance. Markdown and CSV
(numbers in numeric columns) per table, a summary.md, and one static HTML page with
sortable tables, an accuracy-versus-training-cost plot and, for tuned models, budget
curves (best validation NDCG@10 against CPU seconds of tuning), rendered by
`bench.leaderboard_page`.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections import defaultdict
from pathlib import Path

import numpy as np

from bench.errors import BenchError
from bench.results import ResultsStore
from bench.training.config import RunConfig, keys_with

METRICS = ("hr@10", "hr@20", "ndcg@10", "ndcg@20", "mrr@20")
# over explore targets (not in the history) and repeat targets; older results lack them
EXPLORE_METRICS = ("explore_ndcg@10", "explore_hr@10", "repeat_ndcg@10")
# the metric rows are ranked by, compared on, and whose per-target values come from the
# reciprocal ranks every run saves
PRIMARY = "ndcg@10"
PRIMARY_CUTOFF = 10
# models that cost seconds and set the floor of every table (DESIGN.md "Floors")
FLOORS = ("pop", "repeat", "sr")
RESAMPLES = 10_000
SIGNIFICANCE = (
    "paired bootstrap over test targets (10,000 resamples): the 95% interval of the row's "
    "NDCG@10 minus the top row's, per-target NDCG@10 = 1/log2(1 + rank) within the top 10, "
    "averaged over seeds; a row is significantly below the top when its interval excludes 0"
)
FLOOR_RULE = (
    "a row beats the floors when the 95% interval of its NDCG@10 minus the best floor "
    "row's (pop, repeat, sr) lies above 0; a row that does not is below the floor, "
    "not a learned result"
)


# run options that never change a table's configuration: where files go, threads,
# tracking, the seed (seeds are averaged) and the device count; declared on RunConfig
PLACEMENT_KEYS = keys_with("placement", "seed", "parallel")
# options of gradient training: a model that is fitted without epochs (pop, the kNN
# family) ignores them, so runs that differ only here are the same configuration
TRAINING_KEYS = keys_with("training", "budget")


# a run option added later defaults to the behaviour before it, so a result written
# before the option existed ran with its default
RUN_DEFAULTS = {
    name: field.default for name, field in RunConfig.model_fields.items() if not field.is_required()
}


def trained_on_gpu(result: dict) -> str | None:
    """The GPU a run trained on, or None: its seconds are not CPU seconds, and a table
    that compares costs says so. A run on a GPU machine used the GPU unless it asked for
    the CPU (runs record what they used as `compute`; older ones only what they asked);
    a fitted model trains on nothing."""
    gpu = (result.get("hardware") or {}).get("gpu")
    used = (result.get("compute") or {}).get("accelerator")
    asked = (result.get("run_config") or {}).get("accelerator", "auto")
    on_gpu = used == "gpu" if used else asked != "cpu"
    return gpu if gpu and on_gpu and result.get("epochs") else None


def _config_key(result: dict) -> str:
    ignored = PLACEMENT_KEYS | (TRAINING_KEYS if result.get("epochs") == 0 else set())
    given = {**RUN_DEFAULTS, **result.get("run_config", {})}
    run = {k: v for k, v in given.items() if k not in ignored}
    return json.dumps([result.get("hyperparameters"), run], sort_keys=True, default=str)


def _pick_groups(rows: list[dict], monitor: str) -> list[list[dict]]:
    """Up to two groups of seeds per model, side by side: its tuned row (the final runs
    of its latest study's best trial) and its default row (`_pick_rows`)."""
    groups = []
    finals = [r for r in rows if r["kind"] == "final"]
    if finals:
        latest = max(finals, key=lambda r: r["created_at"])
        best = latest["result"].get("best_trial")  # a continued study may find a new best
        groups.append(
            [
                r
                for r in finals
                if r["study"] == latest["study"] and r["result"].get("best_trial") == best
            ]
        )
    default = _pick_rows(rows, monitor)
    return [*groups, default] if default else groups


def _pick_rows(rows: list[dict], monitor: str) -> list[dict]:
    """The untuned group of seeds: among the run configs with the most seeds, the one with
    the best mean validation score (chosen on valid, never on test; a lucky single seed
    cannot displace a config run on three)."""
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


def _run_file(result: dict, key: str) -> Path | None:
    """A file a run saved: stored relative to its run folder (`run_dir`), or absolute in
    results written before paths were made relative."""
    name = result.get(key)
    if not name:
        return None
    path = Path(name)
    if not path.is_absolute() and result.get("run_dir"):
        path = Path(result["run_dir"]) / path
    return path if path.exists() else None


def ndcg_from_reciprocal_ranks(rr: np.ndarray, k: int = PRIMARY_CUTOFF) -> np.ndarray:
    """Per-target NDCG@k from 1/rank: 1/log2(1 + rank) when rank <= k, else 0."""
    rr = np.asarray(rr, dtype=np.float64)
    with np.errstate(divide="ignore"):
        rank = np.rint(1.0 / rr)  # a reciprocal rank of 0 is rank inf
    return np.where(rank <= k, 1.0 / np.log2(1.0 + np.minimum(rank, k)), 0.0)


def _per_target(group: list[dict]) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Per-target NDCG@10 averaged over the seeds (the targets are the same across seeds of
    one table), and the repeat mask when every seed saved the same one."""
    gains, masks = [], []
    for r in group:
        rr_file = _run_file(r["result"], "test_rr_file")
        if rr_file is None:
            return None, None
        gains.append(ndcg_from_reciprocal_ranks(np.load(rr_file)))
        repeat_file = _run_file(r["result"], "test_repeat_file")
        masks.append(None if repeat_file is None else np.load(repeat_file).astype(bool))
    if len({g.shape for g in gains}) != 1:
        return None, None
    mask = masks[0]
    if (
        mask is None
        or mask.shape != gains[0].shape
        or any(m is None or not np.array_equal(m, mask) for m in masks)
    ):
        mask = None
    return np.mean(gains, axis=0), mask


def resample_means(values: np.ndarray, n: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """(n, rows): the mean of every row of `values` (rows x targets) over n resamples of
    the targets with replacement, the same resamples for every row, so that differences
    of rows are paired bootstraps. Each block's draw counts meet all rows in one matrix
    product: a table costs one set of draws, not one per pair of rows."""
    values = np.atleast_2d(np.asarray(values, dtype=np.float64))
    size = values.shape[1]
    rng = np.random.default_rng(seed)
    means = np.empty((n, values.shape[0]))
    step = max(1, 4_000_000 // size)  # bounded memory for the blocks of draws
    for start in range(0, n, step):
        rows = min(step, n - start)
        draws = rng.integers(0, size, size=(rows, size), dtype=np.int64)
        draws += (np.arange(rows) * size)[:, None]  # one bincount counts every resample
        counts = np.bincount(draws.ravel(), minlength=rows * size).reshape(rows, size)
        means[start : start + rows] = counts.astype(np.float64) @ values.T / size
    return means


def bootstrap_means(values: np.ndarray, n: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """Means of n resamples of one vector. When it takes few distinct values (per-target
    NDCG@10 of one model does), how often each is drawn is one multinomial: the same
    distribution as drawing targets, at a cost per distinct value, not per target."""
    values = np.asarray(values, dtype=np.float64)
    distinct, counts = np.unique(values, return_counts=True)
    if len(distinct) * 4 > len(values):
        return resample_means(values, n, seed)[:, 0]
    rng = np.random.default_rng(seed)
    return rng.multinomial(len(values), counts / len(values), size=n) @ distinct / len(values)


def _quantiles(resampled: np.ndarray) -> tuple[float, float]:
    low, high = np.quantile(resampled, [0.025, 0.975])
    return float(low), float(high)


def mean_interval(values: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """95% bootstrap interval of the mean of `values`."""
    return _quantiles(bootstrap_means(values, seed=seed))


def paired_bootstrap(a: np.ndarray, b: np.ndarray, n: int = RESAMPLES, seed: int = 0):
    """95% interval of mean(a - b) over paired targets, and whether it excludes 0."""
    means = resample_means(np.stack([a, b]), n, seed)
    low, high = _quantiles(means[:, 0] - means[:, 1])
    return low, high, bool(low > 0 or high < 0)


def build_tables(
    store: ResultsStore,
    dataset: str | None = None,
    protocol: str | None = None,
    monitor: str = "ndcg@10",
) -> list[dict]:
    """One table per (data set, protocol, protocol hash, target, data fingerprint), rows
    sorted by test NDCG@10. A result without a fingerprint (written before results had
    one) groups under None, with the other such results."""
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
        key = (
            r["dataset"],
            r["protocol"],
            r["protocol_hash"],
            r["target"],
            r["result"].get("data_fingerprint"),
        )
        by_table[key][r["model"]].append(r)
    tables = []
    ordered = sorted(by_table.items(), key=lambda kv: tuple(str(x or "") for x in kv[0]))
    for (ds, proto, proto_hash, target, fingerprint), per_model in ordered:
        entries = []
        for model, model_rows in per_model.items():
            entries += [_summarise(model, group) for group in _pick_groups(model_rows, monitor)]
        entries.sort(key=lambda e: -np.nan_to_num(e["mean"][PRIMARY], nan=-np.inf))
        table = {
            "dataset": ds,
            "protocol": proto,
            "protocol_hash": proto_hash,
            "target": target,
            "data_fingerprint": fingerprint,
            "synthetic": any(r["synthetic"] for m in per_model.values() for r in m),
            "rows": entries,
            "curves": budget_curves(per_model, monitor),
        }
        _resample_rows(entries)
        _mark_significance(entries)
        _mark_floors(table)
        table.update(_table_facts(entries))
        tables.append(table)
    return tables


def budget_curves(per_model: dict[str, list[dict]], monitor: str = PRIMARY) -> dict:
    """Per tuned model, (CPU seconds spent, best validation score so far) after each of its
    trials, from the trial rows of its latest study (the one its final runs came from):
    what the equal budget bought each model, and whether more would have helped."""
    curves = {}
    for model, rows in sorted(per_model.items()):
        trials = [
            r for r in rows if r["kind"] == "trial" and r["result"].get("cpu_seconds") is not None
        ]
        if not trials:
            continue  # untuned, or tuned before trials recorded their CPU time
        finals = [r for r in rows if r["kind"] == "final"]
        study = max(finals or trials, key=lambda r: r["created_at"])["study"]
        spent, x, best, points = 0.0, 0.0, -math.inf, []
        for r in sorted(trials, key=lambda r: r["created_at"]):
            if r["study"] != study:
                continue
            result = r["result"]
            spent += result["cpu_seconds"]
            # the study's spend, pruned trials (which write no row) included, when recorded
            x = max(x, result.get("study_cpu_seconds") or spent)
            best = max(best, result["metrics"]["valid"].get(monitor, -math.inf))
            points.append((x, best))
        if points:
            curves[model] = points
    return curves


def _summarise(model: str, group: list[dict]) -> dict:
    results = [g["result"] for g in sorted(group, key=lambda g: g["seed"])]
    test = [r["metrics"]["test"] for r in results]
    epochs = [r.get("epochs") for r in results]
    mean, std, count = {}, {}, {}
    for m in (*METRICS, *EXPLORE_METRICS):
        values = [t[m] for t in test if t.get(m) is not None and not math.isnan(t[m])]
        count[m] = len(values)
        mean[m] = float(np.mean(values)) if values else float("nan")
        # sample standard deviation over seeds (ddof=1), as papers report seed spread
        std[m] = float(np.std(values, ddof=1 if len(values) > 1 else 0)) if values else math.nan
    budget = results[0].get("budget") or {
        "trials": 0,
        "seconds": sum(r["train_seconds"] for r in results),
    }
    gains, repeat_mask = _per_target(group)
    tuned = group[0]["kind"] == "final"
    return {
        "model": model,
        "tuned": tuned,
        "name": f"{model} (tuned)" if tuned else model,  # what a table calls the row
        "search_space": results[0].get("search_space") if tuned else None,
        "seeds": [r["seed"] for r in results],
        "mean": mean,
        "std": std,
        "n": count,
        "seconds_per_epoch": float(np.mean([r.get("seconds_per_epoch") or 0 for r in results])),
        "train_seconds": float(np.mean([r.get("train_seconds") or 0 for r in results])),
        "budget": budget,
        "parameters": results[0].get("parameters", 0),
        "hardware": results[0].get("hardware", {}),
        "gpu": trained_on_gpu(results[0]),
        "versions": results[0].get("versions", {}),
        "hyperparameters": results[0].get("hyperparameters", {}),
        "training": _training(results[0], epochs),
        "mode": _mode(results[0]),
        "epochs": epochs,
        "gains": gains,
        "repeat_mask": repeat_mask,
        "test_metrics": test[0],
        "artifact": results[0].get("artifact"),
        "runs": results,  # for the page's links and provenance
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


def _resample_rows(entries: list[dict]) -> None:
    """Every row's NDCG@10 over one shared set of resamples of the test targets (rows
    whose saved ranks cover other targets than the top row's get none)."""
    for e in entries:
        e["resampled"] = None
    rows = [e for e in entries if e["gains"] is not None and len(e["gains"])]
    if not rows:
        return
    shape = rows[0]["gains"].shape
    rows = [e for e in rows if e["gains"].shape == shape]
    means = resample_means(np.stack([e["gains"] for e in rows]))
    for e, column in zip(rows, means.T, strict=True):
        e["resampled"] = column


def _difference(row: dict, other: dict) -> dict | None:
    """Paired interval of row − other on per-target NDCG@10, when both have the targets."""
    if row["resampled"] is None or other["resampled"] is None:
        return None
    low, high = _quantiles(row["resampled"] - other["resampled"])
    diff = float(np.mean(row["gains"] - other["gains"]))
    return {"diff": diff, "ci": [low, high], "significant": bool(low > 0 or high < 0)}


def _mark_significance(entries: list[dict]) -> None:
    for i, e in enumerate(entries):
        e["top"] = i == 0
        e["vs_top"] = None if i == 0 else _difference(e, entries[0])


def _mark_floors(table: dict) -> None:
    """Each row's standing against the best floor row (highest NDCG@10 among pop, repeat,
    sr in the table): "floor", "beats floors", "below floor", "untested" (no per-target
    ranks to test with), or None when the table holds no floor."""
    rows = table["rows"]
    floors = [e for e in rows if e["model"] in FLOORS]  # sorted: the first is the best
    table["floors"] = [e["name"] for e in floors]
    best = floors[0] if floors else None
    for e in rows:
        e["vs_floor"] = None
        if best is None:
            e["floor"] = None
        elif e["model"] in FLOORS:
            e["floor"] = "floor"
        else:
            e["vs_floor"] = _difference(e, best)
            if e["vs_floor"] is None:
                e["floor"] = "untested"
            else:
                low = e["vs_floor"]["ci"][0]
                e["floor"] = "beats floors" if low > 0 else "below floor"
            if e["vs_floor"] is not None:
                e["vs_floor"]["floor"] = best["name"]
    table["beats_floors"] = [e["name"] for e in rows if e["floor"] == "beats floors"]


def _artifact_test_count(path: str | None) -> int | None:
    meta = Path(path) / "meta.json" if path else None
    if meta is None or not meta.exists():
        return None
    counts = json.loads(meta.read_text()).get("counts", {})
    return (counts.get("test") or {}).get("examples")


def _table_facts(rows: list[dict]) -> dict:
    """What the table rests on: its test targets, the repeat share of those, and the 95%
    intervals of its top row's NDCG@10 (over all targets, and explore / repeat ones when
    the runs saved which targets were repeats)."""
    targets = repeats = None
    for e in rows:
        t = e["test_metrics"]
        if targets is None and t.get("targets"):
            targets = int(t["targets"])
            if t.get("repeat_targets") is not None:
                repeats = int(t["repeat_targets"])
    if targets is None:
        targets = next(filter(None, (_artifact_test_count(e["artifact"]) for e in rows)), None)
    if targets is None:
        targets = next((len(e["gains"]) for e in rows if e["gains"] is not None), None)
    share = repeats / targets if repeats is not None and targets else None
    if share is None:
        share = next((float(e["repeat_mask"].mean()) for e in rows if _has_mask(e)), None)
    facts = {"targets": targets, "repeat_share": share, "top_ci": None, "top_split_ci": {}}
    top = rows[0] if rows else None
    if top is not None and top["gains"] is not None and len(top["gains"]):
        facts["top_ci"] = _quantiles(top["resampled"])
        if _has_mask(top):
            for name, part in (("explore", ~top["repeat_mask"]), ("repeat", top["repeat_mask"])):
                if part.any():
                    values = top["gains"][part]
                    facts["top_split_ci"][name] = (float(values.mean()), *mean_interval(values))
    return facts


def _has_mask(e: dict) -> bool:
    return e["repeat_mask"] is not None and e["gains"] is not None and len(e["repeat_mask"]) > 0


# ---------------------------------------------------------------- rendering

DASH = "–"


def _cell(e: dict, m: str) -> str:
    if not e["n"][m]:
        return DASH
    if e["n"][m] == 1:  # one seed (or a deterministic model): no spread to show
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
        return f"untuned, {budget.get('seconds', 0):.0f} s"

    def of(spent: float, given) -> str:
        return f"{spent:.0f}" + (f" of {given:.0f}" if given else "")

    text = f"{of(budget['trials'], budget.get('requested_trials'))} trials"
    text += f", {budget.get('seconds', 0):.0f} s"
    if budget.get("cpu_seconds") is not None:
        text += f", {of(budget['cpu_seconds'], budget.get('requested_cpu_seconds'))} CPU s"
    if budget.get("stopped_by"):
        text += f", stopped by {STOP_TEXT.get(budget['stopped_by'], budget['stopped_by'])}"
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
    if not missing and not few:
        return f"Every registered model has a row; every trained row has {SEEDS_WANTED} seeds."
    parts = []
    if missing:
        parts.append("Not run yet: " + ", ".join(missing) + ".")
    if few:
        parts.append(f"Fewer than {SEEDS_WANTED} seeds so far: " + ", ".join(few) + ".")
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
    if len(values) < 2:
        return f"{values[0]:.4f}"
    return f"{np.mean(values):.4f} ± {np.std(values, ddof=1):.4f}"


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


def rank_changes(t: dict) -> list[tuple[str, int, int]]:
    """(model, rank among the default rows, rank among the tuned rows) for the models a
    table holds both ways, best first by tuned rank: does tuning change the ranking?"""
    both = {e["model"] for e in t["rows"] if e["tuned"]} & {
        e["model"] for e in t["rows"] if not e["tuned"]
    }

    def ranks(tuned: bool) -> dict[str, int]:
        ordered = [e["model"] for e in t["rows"] if e["tuned"] == tuned and e["model"] in both]
        return {model: i for i, model in enumerate(ordered, start=1)}

    before, after = ranks(False), ranks(True)
    return sorted(((m, before[m], after[m]) for m in both), key=lambda x: x[2])


def _stem(t: dict) -> str:
    parts = [t["dataset"], t["protocol"], t["target"], t["protocol_hash"][:8]]
    if t["data_fingerprint"]:
        parts.append(f"data-{t['data_fingerprint'][:8]}")
    return "__".join(re.sub(r"[^A-Za-z0-9._=+-]", "-", str(p)) for p in parts)


def write_leaderboards(tables: list[dict], out: str | Path) -> list[Path]:
    """`<dataset>__<protocol>__<target>__<hash8>[__data-<fp8>].md/.csv` per table, no
    two tables sharing a name, and summary.md and index.html over all of them."""
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
            f"# {_title(t)}",
            "",
            _facts_line(t),
            "",
            _floor_line(t),
            "",
            _coverage_line(t),
            "",
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
    from bench.leaderboard_page import publish_run_files, render_page

    publish_run_files(tables, out)
    page = out / "index.html"
    page.write_text(render_page(tables, out))
    written.append(page)
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
            f"## {_title(t)}",
            "",
            _facts_line(t),
            "",
            _floor_line(t),
            "",
            _coverage_line(t),
            "",
            "| model | " + " | ".join(m.upper() for m in SUMMARY_METRICS) + " | seeds | epochs run "
            "| training | explore NDCG@10 | Δ NDCG@10 vs top | vs floors |",
            "|---|" + "---|" * (len(SUMMARY_METRICS) + 6),
        ]
        for e in t["rows"]:
            cells = [
                e["name"],
                *[_cell(e, m) for m in SUMMARY_METRICS],
                ",".join(map(str, e["seeds"])),
                ",".join(map(str, e["epochs"])),
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
