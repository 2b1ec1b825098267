"""A seeded generator of Taobao `UserBehavior.csv` files with structure a model can learn.

Why: the real file is 3.5 GB behind a login; smoke runs and scale benchmarks need a file
of any size, offline, in exactly the real format (no header;
`user_id,item_id,category_id,behavior,unix_seconds`; rows grouped by user, time
non-decreasing within a user) so that the very same adapter and recipe read it.

What is planted (all of it vectorised numpy, one chunk of users at a time):

- items belong to categories of Zipf-distributed sizes; item popularity is Zipf over a
  random ranking, so raw ids say nothing about popularity;
- each user has four favourite categories; a fresh browsing run starts in one of them
  (else anywhere, by popularity) at an item drawn by popularity within the category;
- every item has four likely successors (mostly in its own category, by popularity);
  a run follows them (first successor most often) until it stops (geometric lengths);
  some runs return to an item the user started from recently, some steps repeat the item;
- behaviours follow Taobao's mix (about 89.5% pv, 2.9% fav, 5.5% cart, 2.2% buy); most
  fav / cart / buy events act on an item the user viewed shortly before (a funnel);
- runs group into sessions placed over the window with a day/night rhythm (UTC+8);
  events inside a session are seconds to minutes apart.

Memory is bounded by the chunk (about `chunk_rows` events) plus per-item tables
(a few tens of bytes an item); nothing is ever user x item. The file is written under
`UserBehavior.csv.tmp-<pid>-<token>` and renamed into place, so an interrupted run
leaves no file that a later run would read.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import polars as pl

from bench.errors import ConfigError

# The real UserBehavior.csv (Tianchi dataset 649).
REAL_ROWS = 100_150_807
REAL_USERS = 987_994
REAL_ITEMS = 4_162_024
REAL_CATEGORIES = 9_439

BEHAVIOR_NAMES = ("pv", "fav", "cart", "buy")  # codes 0..3 below, the schema's order
BEHAVIOR_MIX = np.array([0.895, 0.029, 0.055, 0.021])  # pv, fav, cart, buy (sums to 1)
FUNNEL = np.array([0.0, 0.7, 0.85, 0.9])  # P(a non-pv event acts on a recently viewed item)

N_SUCCESSORS = 4
SUCCESSOR_WEIGHTS = np.array([0.6, 0.25, 0.1, 0.05])
SUCCESSOR_SAME_CATEGORY = 0.8
N_AFFINITY = 4
AFFINITY_WEIGHTS = np.array([0.5, 0.25, 0.15, 0.1])
EXPLORE = 0.2  # a fresh run outside the user's favourite categories
P_RUN_START = 0.35  # an event starts a new run (else follows a successor)
P_REVISIT = 0.2  # a new run starts at an item the user started from before
P_REPEAT = 0.06  # a run step views the same item again (collapsed by recipes)
P_NEW_SESSION = 0.3  # a new run also starts a new session
MAX_RUN = 64
ZIPF_ITEMS = 0.9
ZIPF_CATEGORIES = 1.0
MEAN_GAP_S = 45.0
LENGTH_SHAPE = 1.5  # gamma shape of user activity (real: median ~78, mean ~101 events)
# Relative activity per local hour (UTC+8), 0h..23h: quiet nights, evening peak.
DIURNAL = np.array(
    [3.5, 2.0, 1.2, 0.8, 0.6, 0.6, 0.9, 1.8, 3.0, 3.8, 4.2, 4.3]
    + [4.3, 4.2, 4.2, 4.2, 4.1, 4.0, 4.2, 4.8, 5.6, 6.0, 5.6, 4.8]
)
CHUNK_ROWS = 2_000_000
_ENUM = pl.Enum(list(BEHAVIOR_NAMES))
_SHIFT = np.int64(1) << np.int64(34)  # packs (user in chunk, seconds in window) into int64


def default_sizes(rows: int) -> dict[str, int]:
    """Users and items scale with rows at the real file's ratios; categories as sqrt(rows)."""
    scale = rows / REAL_ROWS
    users = min(rows, max(1, round(REAL_USERS * scale)))
    items = max(10, round(REAL_ITEMS * scale))
    categories = min(items, max(1, round(REAL_CATEGORIES * scale**0.5)))
    return {"users": users, "items": items, "categories": categories}


@dataclass
class _Catalogue:
    """Per-item tables, items numbered 0..n-1 in category-major order."""

    item_raw: np.ndarray  # int64 raw item id
    item_cat: np.ndarray  # int32 category of each item
    cat_raw: np.ndarray  # int64 raw category id
    cum: np.ndarray  # float64 cumulative item popularity (category-major)
    cat_lo: np.ndarray  # first item of each category
    cat_hi: np.ndarray  # one past its last item
    cat_cum: np.ndarray  # cumulative category popularity
    successors: np.ndarray  # (n_items, N_SUCCESSORS) int32


def _cumulative(p: np.ndarray) -> np.ndarray:
    return np.cumsum(p / p.sum())


def _choose(cum: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Inverse CDF: index i with cum[i-1] <= u < cum[i]."""
    return np.minimum(np.searchsorted(cum, u, side="right"), len(cum) - 1)


def _raw_ids(rng: np.random.Generator, n: int, spread: float) -> np.ndarray:
    """n distinct positive ids, scattered over 1..n*spread like the real (sparse) ids."""
    return rng.choice(int(n * spread) + 1, size=n, replace=False).astype(np.int64) + 1


def _catalogue(rng: np.random.Generator, items: int, categories: int) -> _Catalogue:
    cat_w = (np.arange(categories) + 1.0) ** -ZIPF_CATEGORIES
    sizes = rng.multinomial(items - categories, cat_w / cat_w.sum()) + 1
    hi = np.cumsum(sizes)
    lo = hi - sizes
    item_cat = np.repeat(np.arange(categories, dtype=np.int32), sizes)
    rank = rng.permutation(items).astype(np.float64)
    pop = (rank + max(1.0, items / 4000)) ** -ZIPF_ITEMS
    cum = _cumulative(pop)
    cat_pop = np.add.reduceat(pop, lo)
    cat = _Catalogue(
        item_raw=_raw_ids(rng, items, 1.24),
        item_cat=item_cat,
        cat_raw=_raw_ids(rng, categories, max(1.5, 5e6 / categories)),
        cum=cum,
        cat_lo=lo,
        cat_hi=hi,
        cat_cum=_cumulative(cat_pop),
        successors=np.empty((items, N_SUCCESSORS), dtype=np.int32),
    )
    # successors: mostly popular items of the same category, else of a popular category
    own = np.repeat(item_cat, N_SUCCESSORS)
    other = _choose(cat.cat_cum, rng.random(own.size))
    same = rng.random(own.size) < SUCCESSOR_SAME_CATEGORY
    succ = _item_in(cat, np.where(same, own, other), rng.random(own.size))
    me = np.repeat(np.arange(items, dtype=np.int64), N_SUCCESSORS)
    clash = succ == me
    succ[clash] = _choose(cum, rng.random(int(clash.sum())))  # never the item itself, mostly
    cat.successors[:] = succ.reshape(items, N_SUCCESSORS)
    return cat


def _item_in(cat: _Catalogue, categories: np.ndarray, u: np.ndarray) -> np.ndarray:
    """An item of each given category, drawn by popularity within it."""
    base = np.where(cat.cat_lo > 0, cat.cum[cat.cat_lo - 1], 0.0)[categories]
    top = cat.cum[cat.cat_hi - 1][categories]
    picked = np.searchsorted(cat.cum, base + u * (top - base), side="right")
    return np.clip(picked, cat.cat_lo[categories], cat.cat_hi[categories] - 1)


def _recent(
    flags: np.ndarray, at: np.ndarray, user_first: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """For events `at`: a recent earlier event of the same user with `flags` set.

    Returns (ok, index): ok is False where the user has no such earlier event. The pick is
    the most recent one with probability 1/2, the one before with 1/4, and so on.
    """
    positions = np.flatnonzero(flags)
    before = np.cumsum(flags) - flags  # flagged events strictly before each event
    base = before[user_first]
    count = before[at] - base
    ok = count > 0
    back = np.minimum(rng.geometric(0.5, size=at.size) - 1, np.maximum(count - 1, 0))
    pick = np.where(ok, base + count - 1 - back, 0)
    return ok, positions[pick] if positions.size else pick


def _chunk(
    cat: _Catalogue,
    lengths: np.ndarray,
    rng: np.random.Generator,
    window_s: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One chunk of users: (user in chunk, item, behaviour code, seconds into the window)."""
    n_users = lengths.size
    n = int(lengths.sum())
    idx = np.arange(n, dtype=np.int64)
    first_of = np.cumsum(lengths) - lengths
    user = np.repeat(np.arange(n_users, dtype=np.int64), lengths)
    user_first = first_of[user]
    first = np.zeros(n, dtype=bool)
    first[first_of] = True

    # runs: a start draws a fresh (or revisited) item, the rest follow successors
    start = first | (rng.random(n) < P_RUN_START)
    pos = idx - np.maximum.accumulate(np.where(start, idx, 0))
    start |= pos % MAX_RUN == 0
    pos = (idx - np.maximum.accumulate(np.where(start, idx, 0))).astype(np.uint8)
    revisit = start & ~first & (rng.random(n) < P_REVISIT)
    fresh = start & ~revisit
    items = np.zeros(n, dtype=np.int64)

    at = np.flatnonzero(fresh)
    affinity = _choose(cat.cat_cum, rng.random((n_users, N_AFFINITY)))
    slot = _choose(_cumulative(AFFINITY_WEIGHTS), rng.random(at.size))
    explore = rng.random(at.size) < EXPLORE
    category = np.where(
        explore, _choose(cat.cat_cum, rng.random(at.size)), affinity[user[at], slot]
    )
    items[at] = _item_in(cat, category, rng.random(at.size))

    at = np.flatnonzero(revisit)
    _, earlier = _recent(fresh, at, user_first[at], rng)  # the user's first event is fresh
    items[at] = items[earlier]

    order = np.argsort(pos, kind="stable")
    bounds = np.searchsorted(pos[order], np.arange(MAX_RUN + 1))
    succ_cum = _cumulative(SUCCESSOR_WEIGHTS)
    for depth in range(1, MAX_RUN):
        at = order[bounds[depth] : bounds[depth + 1]]
        if at.size == 0:
            break
        prev = items[at - 1]
        k = _choose(succ_cum, rng.random(at.size))
        repeat = rng.random(at.size) < P_REPEAT
        items[at] = np.where(repeat, prev, cat.successors[prev, k])

    # behaviours, and the funnel: most non-pv events act on an item viewed shortly before
    behavior = _choose(_cumulative(BEHAVIOR_MIX), rng.random(n)).astype(np.uint8)
    at = np.flatnonzero(behavior > 0)
    viewed, earlier = _recent(behavior == 0, at, user_first[at], rng)
    take = viewed & (rng.random(at.size) < FUNNEL[behavior[at]])
    items[at[take]] = items[earlier[take]]

    # time: sessions start at random hours of random days, events follow seconds apart
    session_start = first | (start & (rng.random(n) < P_NEW_SESSION))
    session = np.cumsum(session_start) - 1
    s_user = user[session_start]
    days = max(1, window_s // 86_400)
    hour = _choose(_cumulative(DIURNAL), rng.random(s_user.size))
    s_time = (
        rng.integers(0, days, s_user.size) * 86_400
        + hour * 3_600
        + rng.integers(0, 3_600, s_user.size)
    )
    s_time = np.minimum(s_time, window_s - 1)
    s_time = np.sort(s_user * _SHIFT + s_time) - s_user * _SHIFT  # sorted within each user
    gaps = np.rint(rng.exponential(MEAN_GAP_S, n)).astype(np.int64)
    gaps[session_start] = 0
    offset = np.cumsum(gaps)
    offset -= offset[np.flatnonzero(session_start)][session]
    ts = s_time[session] + offset
    ts = np.maximum.accumulate(user * _SHIFT + ts) - user * _SHIFT  # non-decreasing per user
    np.minimum(ts, window_s - 1, out=ts)
    return user, items, behavior, ts


def _start_seconds(start: str) -> int:
    try:
        moment = datetime.fromisoformat(start)
    except ValueError:
        raise ConfigError(
            f"cannot read start {start!r} as an ISO date-time",
            option="--start",
            hint="write e.g. 2017-11-25T00:00:00+08:00",
        ) from None
    if moment.tzinfo is None:
        raise ConfigError(
            f"start {start!r} has no UTC offset", option="--start", hint="add one, e.g. +08:00"
        )
    return int(moment.timestamp())


def _check(rows: int, users: int, items: int, categories: int, days: int) -> None:
    problems = [
        (rows >= 1, "--rows", f"rows must be at least 1, not {rows}"),
        (1 <= users <= rows, "--users", f"users must be in 1..rows ({rows}), not {users}"),
        (items >= 1, "--items", f"items must be at least 1, not {items}"),
        (
            1 <= categories <= items,
            "--categories",
            f"categories must be in 1..items ({items}), not {categories}",
        ),
        (days >= 1, "--days", f"days must be at least 1, not {days}"),
    ]
    for ok, option, message in problems:
        if not ok:
            raise ConfigError(message, option=option, hint="see `bench data synth --help`")


def _remove_stale(path: Path) -> None:
    """Temporary files of earlier runs whose process is gone (killed mid-write)."""
    for tmp in path.parent.glob(f"{path.name}.tmp-*"):
        try:
            pid = int(tmp.name.rsplit(".tmp-", 1)[1].split("-")[0])
            os.kill(pid, 0)
        except ProcessLookupError:
            tmp.unlink(missing_ok=True)
        except (ValueError, IndexError, PermissionError, OSError):
            continue


def _write_frame(handle, user_raw, item_raw, cat_raw, behavior, unix) -> None:
    frame = pl.DataFrame(
        {
            "user_id": user_raw,
            "item_id": item_raw,
            "category_id": cat_raw,
            "behavior": pl.Series(behavior).replace_strict(
                list(range(4)), list(BEHAVIOR_NAMES), return_dtype=_ENUM
            ),
            "timestamp": unix,
        }
    )
    frame.write_csv(handle, include_header=False)


def write_taobao_synth(
    path: Path,
    rows: int,
    *,
    seed: int = 0,
    users: int | None = None,
    items: int | None = None,
    categories: int | None = None,
    start: str = "2017-11-25T00:00:00+08:00",
    days: int = 9,
    chunk_rows: int = CHUNK_ROWS,
) -> dict:
    """Write a synthetic UserBehavior.csv of exactly `rows` rows to `path`; return a summary.

    Unset sizes scale with `rows` at the real file's ratios (`default_sizes`). The same
    arguments give the same bytes. `SYNTHETIC.txt` beside the file records the parameters.
    """
    t0 = time.perf_counter()
    path = Path(path)
    sizes = default_sizes(rows) if rows >= 1 else {"users": 1, "items": 1, "categories": 1}
    users = sizes["users"] if users is None else users
    items = sizes["items"] if items is None else items
    categories = min(items, sizes["categories"]) if categories is None else categories
    _check(rows, users, items, categories, days)
    start_unix = _start_seconds(start)
    window_s = days * 86_400

    seeds = np.random.SeedSequence(seed).spawn(2)
    rng = np.random.default_rng(seeds[0])
    cat = _catalogue(rng, items, categories)
    activity = rng.gamma(LENGTH_SHAPE, size=users)
    lengths = rng.multinomial(rows - users, activity / activity.sum()) + 1
    user_raw = np.sort(_raw_ids(rng, users, 1.03))
    ends = np.cumsum(lengths)
    cuts = np.searchsorted(ends, np.arange(chunk_rows, rows, chunk_rows), side="left") + 1
    cuts = np.unique(np.concatenate([[0], cuts[cuts < users], [users]]))
    chunk_seeds = seeds[1].spawn(len(cuts) - 1)

    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(path)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    seen = np.zeros(items, dtype=bool)
    seen_cat = np.zeros(categories, dtype=bool)
    counts = np.zeros(4, dtype=np.int64)
    try:
        with open(tmp, "wb") as handle:
            for c, (lo, hi) in enumerate(zip(cuts[:-1], cuts[1:], strict=True)):
                u, it, beh, ts = _chunk(
                    cat, lengths[lo:hi], np.random.default_rng(chunk_seeds[c]), window_s
                )
                seen[it] = True
                seen_cat[cat.item_cat[it]] = True
                counts += np.bincount(beh, minlength=4)
                _write_frame(
                    handle,
                    user_raw[lo:hi][u],
                    cat.item_raw[it],
                    cat.cat_raw[cat.item_cat[it]],
                    beh,
                    ts + start_unix,
                )
            handle.flush()
            os.fsync(handle.fileno())
        summary = {
            "rows": rows,
            "users": users,
            "items": items,
            "categories": categories,
            "items_seen": int(seen.sum()),
            "categories_seen": int(seen_cat.sum()),
            "behaviors": dict(zip(BEHAVIOR_NAMES, map(int, counts), strict=True)),
            "start": start,
            "days": days,
            "chunk_rows": chunk_rows,
            "seed": seed,
            "path": str(path),
        }
        note = path.with_name("SYNTHETIC.txt")
        note_tmp = note.with_name(f"{note.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
        note_tmp.write_text(_note(summary))
        os.replace(tmp, path)
        os.replace(note_tmp, note)
    except BaseException:
        tmp.unlink(missing_ok=True)
        for leftover in path.parent.glob(f"SYNTHETIC.txt.tmp-{os.getpid()}-*"):
            leftover.unlink(missing_ok=True)
        raise
    summary["seconds"] = round(time.perf_counter() - t0, 3)
    return summary


def _note(summary: dict) -> str:
    params = {k: summary[k] for k in ("rows", "users", "items", "categories", "start", "days")}
    params.update(seed=summary["seed"], chunk_rows=summary["chunk_rows"])
    return (
        "SYNTHETIC DATA. This UserBehavior.csv is NOT the Taobao data set.\n"
        "It was written by bench.datasets.synth.write_taobao_synth in the Taobao file format\n"
        "(user_id,item_id,category_id,behavior,timestamp; no header) with planted structure\n"
        "(Zipf popularity, category affinity, item-to-item successors, a purchase funnel).\n"
        "Results on it say nothing about real Taobao users. Regenerate with:\n"
        f"  bench data synth taobao --rows {summary['rows']} --seed {summary['seed']}\n"
        "Parameters:\n"
        f"{json.dumps(params, indent=2)}\n"
    )
