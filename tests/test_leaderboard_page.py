"""The leaderboard page: protocol card, provenance, links to each run's files, intervals
as numbers, matplotlib plots with error bars and labelled axes, and sortable tables,
checked in the HTML and in headless Chromium (the rendered DOM, a real click, and a
screenshot kept under $BENCH_TEST_ARTIFACTS)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import urllib.parse
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bench.leaderboard import build_tables, write_leaderboards
from bench.results import ResultsStore

torch.set_num_threads(1)

N_TARGETS = 400
ARTIFACT = "cache/ml-100k/user-loo-hashuserloo"
PARAMS = {"max_len": 50, "min_item_support": 0, "target": "any"}


def _ranks(seed: int, quality: float) -> np.ndarray:
    """Rank 1 with probability `quality`, else rank 50 (NDCG@10 = 0)."""
    hit = np.random.default_rng(seed).random(N_TARGETS) < quality
    return np.where(hit, 1.0, 1 / 50)


def _run(root: Path, store, model: str, seed: int, quality: float, seconds: float, **extra):
    """A finished run as `bench run` leaves it: its folder (identity, config, result,
    ranks, a W&B console log) and its row in the store."""
    run_id = f"{model}-ml-100k-user-loo-s{seed}"
    folder = root / "runs" / run_id
    (folder / "wandb" / "offline-run-1" / "files").mkdir(parents=True)
    np.save(folder / "test_rr.npy", _ranks(seed, quality))
    (folder / "identity.json").write_text(json.dumps({"model": model, "seed": seed}))
    (folder / "config.yaml").write_text(f"model: {model}\nseed: {seed}\n")
    (folder / "wandb" / "offline-run-1" / "files" / "output.log").write_text("epoch 1\n")
    ndcg = float(np.mean(1.0 * (_ranks(seed, quality) == 1.0)))
    result = {
        "run_id": run_id,
        "model": model,
        "dataset": "ml-100k",
        "protocol": "user-loo",
        "protocol_hash": "hashuserloo0",
        "protocol_params": PARAMS,
        "data_fingerprint": "feedc0ffee123456",
        "target": "any",
        "seed": seed,
        "synthetic": False,
        "metrics": {
            "valid": {"ndcg@10": ndcg},
            "test": {
                "hr@10": ndcg,
                "hr@20": ndcg,
                "ndcg@10": ndcg,
                "ndcg@20": ndcg,
                "mrr@20": ndcg,
            },
        },
        "hyperparameters": {"embedding_dim": 64},
        "run_config": {"lr": 0.001, "seed": seed, "training": "sequences", "max_epochs": 5},
        "epochs": 5,
        "train_seconds": seconds,
        "seconds_per_epoch": seconds / 5,
        "parameters": 1000,
        "hardware": {"cpu": "test cpu", "torch_threads": 1},
        "versions": {"bench": "0.1.0", "torch": "2.13.0"},
        "git_commit": "0123456789abcdef0123456789abcdef01234567",
        "finished_at": "2026-11-30T12:00:00+0000",
        "artifact": ARTIFACT,
        "test_rr_file": "test_rr.npy",
        "wandb_dir": "wandb/offline-run-1/files",
        "run_dir": str(folder),
        **extra,
    }
    (folder / "result.json").write_text(json.dumps(result))
    store.add(result, kind="run")
    return folder


@pytest.fixture
def site(tmp_path):
    """A store of four models on one table (sasrec best, gru4rec, the pop floor, narm
    whose run folder is gone), gru4rec tuned in two trials; the page under site/."""
    meta = tmp_path / ARTIFACT / "meta.json"
    meta.parent.mkdir(parents=True)
    counts = {"total": {"items": 1682, "sequences": 943, "events": 100000}, "test": {"items": 529}}
    meta.write_text(json.dumps({"counts": counts, "params": PARAMS, "protocol_version": 2}))
    store = ResultsStore(tmp_path / "results.db")
    for seed in range(3):
        _run(tmp_path, store, "sasrec", seed, 0.6, seconds=120.0 + 10 * seed)
        _run(tmp_path, store, "pop", seed, 0.1, seconds=0.5)
    for seed in range(2):
        _run(tmp_path, store, "gru4rec", seed, 0.4, seconds=60.0)
    for trial, (cpu, score) in enumerate([(30.0, 0.2), (40.0, 0.35)]):
        trial_result = {
            "run_id": f"gru4rec-trial{trial}",
            "model": "gru4rec",
            "dataset": "ml-100k",
            "protocol": "user-loo",
            "protocol_hash": "hashuserloo0",
            "data_fingerprint": "feedc0ffee123456",
            "seed": 0,
            "metrics": {"valid": {"ndcg@10": score}, "test": {}},
            "cpu_seconds": cpu,
        }
        store.add(trial_result, kind="trial", study="gru4rec-study", trial=trial)
    shutil.rmtree(_run(tmp_path, store, "narm", 0, 0.3, seconds=20.0))
    tables = build_tables(store)
    write_leaderboards(tables, tmp_path / "site")
    return tmp_path / "site", tables


class Dom(HTMLParser):
    """The parts of a page the tests read: each table's header and cell texts, each
    link, each <svg>'s texts and element ids."""

    def __init__(self, text: str):
        super().__init__()
        self.tables, self.links, self.svgs, self.ids = [], [], [], {}
        self._cell = self._svg = None
        self._stack = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self._open(tag, dict(attrs), closes=False)

    def handle_startendtag(self, tag, attrs):
        self._open(tag, dict(attrs), closes=True)

    def _open(self, tag: str, attrs: dict, closes: bool) -> None:
        if tag == "table":
            self.tables.append({"head": [], "rows": []})
        elif tag == "tr" and self.tables:
            self.tables[-1]["rows"].append([])
        elif tag in ("td", "th"):
            self._cell = {"text": "", "tag": tag, **attrs}
        elif tag == "a" and attrs.get("href"):
            self.links.append(attrs["href"])
        elif tag == "svg":
            self._svg = {"texts": [], "ids": {}}
            self.svgs.append(self._svg)
        if self._svg is None:
            return
        if tag == "path":  # a path belongs to every group with an id around it
            for owner in filter(None, self._stack):
                self._svg["ids"][owner].append(attrs.get("d", ""))
        if attrs.get("id"):
            self._svg["ids"].setdefault(attrs["id"], [])
        if not closes:
            self._stack.append(attrs.get("id"))

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            table = self.tables[-1]
            if self._cell["tag"] == "th":
                table["head"].append(self._cell["text"].strip())
            else:
                table["rows"][-1].append(self._cell)
            self._cell = None
        if self._svg is not None and self._stack:
            self._stack.pop()
        if tag == "svg":
            self._svg = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell["text"] += data
        if self._svg is not None and data.strip():
            self._svg["texts"].append(data.strip())


def _column(table: dict, name: str) -> list[str]:
    i = table["head"].index(name)
    return [row[i]["text"].strip() for row in table["rows"] if row]


def _number(text: str) -> float:
    return float(text.replace("−", "-"))


def test_card_links_and_intervals_in_the_written_page(site):
    page_dir, tables = site
    text = (page_dir / "index.html").read_text()
    dom = Dom(text)
    # the protocol card: what the protocol does, parameters, hash, fingerprint, counts
    assert '<dl class="card" data-protocol="user-loo" data-hash="hashuserloo0">' in text
    assert "Leave-one-out per user" in text  # from the registered protocol's docstring
    assert "<code>max_len=50</code>" in text and "feedc0ffee123456" in text
    assert 'class="test-targets" data-value="400">400<' in text
    assert "1,682 items, 943 users, 100,000 events" in text
    assert "finished 2026-11-30, from bench commit 01234567" in text
    # when and from which commit the page was made
    made = re.search(r"Generated (\d{4}-\d\d-\d\d \d\d:\d\d) UTC by bench", text)
    assert (
        made
        and abs(
            datetime.strptime(made.group(1), "%Y-%m-%d %H:%M").replace(tzinfo=UTC)
            - datetime.now(UTC)
        ).total_seconds()
        < 600
    )
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=Path(__file__).parent
    ).stdout.strip()
    assert f'<code class="commit">{commit}</code>' in text
    # every link is relative and names a file that is there; the missing folder is named
    assert dom.links and all(not urllib.parse.urlparse(h).scheme for h in dom.links)
    targets = [(page_dir / urllib.parse.unquote(h)).resolve() for h in dom.links]
    assert all(t.exists() for t in targets)
    # ... and lies inside the page's folder: the runs' files are copied next to it
    assert all(page_dir.resolve() / "runs" in t.parents for t in targets)
    names = {(t.parent.name, t.name) for t in targets}
    assert ("sasrec-ml-100k-user-loo-s2", "identity.json") in names
    assert ("gru4rec-ml-100k-user-loo-s1", "result.json") in names
    assert sum(t.name == "output.log" for t in targets) == 3 + 3 + 2
    assert not any("narm" in str(t) for t in targets)
    (board,) = dom.tables
    runs = dict(zip(_column(board, "model"), _column(board, "runs"), strict=True))
    assert runs["narm"] == "s0: folder absent"
    # intervals as numbers, the same as the tables computed
    rows = {e["model"]: e for e in tables[0]["rows"]}
    by_model = {m: i for i, m in enumerate(_column(board, "model"))}
    pop = by_model["pop"]
    low, high = rows["pop"]["vs_top"]["ci"]
    assert _number(_column(board, "Δ top low")[pop]) == pytest.approx(low, abs=1e-4)
    assert _number(_column(board, "Δ top high")[pop]) == pytest.approx(high, abs=1e-4)
    gru = by_model["gru4rec"]
    low, high = rows["gru4rec"]["vs_floor"]["ci"]
    assert 0 < _number(_column(board, "Δ floor low")[gru]) == pytest.approx(low, abs=1e-4)
    assert _number(_column(board, "Δ floor high")[gru]) == pytest.approx(high, abs=1e-4)
    assert _column(board, "floors")[gru] == "beats floors (pop)"
    # narm has no saved ranks: no interval, a dash, not a zero
    assert _column(board, "Δ top low")[by_model["narm"]] == "–"
    # two matplotlib plots: accuracy against cost, and gru4rec's budget curve
    accuracy, curves = dom.svgs
    assert "test NDCG@10 (95% interval)" in accuracy["texts"]
    assert "training time per seed, wall-clock seconds (log scale)" in accuracy["texts"]
    assert "CPU seconds of tuning (log scale)" in curves["texts"]
    assert "best validation NDCG@10 so far" in curves["texts"]
    assert set(curves["ids"]) >= {"board0-curve-gru4rec"}
    assert not any("sasrec" in i for i in curves["ids"])  # untuned: no curve
    assert "Matplotlib" in text and "<polyline" not in text and "<circle" not in text


def test_a_published_folder_keeps_its_links_without_the_runs(site):
    """Regenerated where the run folders are gone (a fresh clone), the page still links
    the copies an earlier publication made; a copy no table lists any more goes."""
    page_dir, tables = site
    runs_root = page_dir.parent / "runs"
    shutil.rmtree(runs_root)  # the original run folders
    (page_dir / "runs" / "unlisted-run").mkdir()
    write_leaderboards(tables, page_dir)
    dom = Dom((page_dir / "index.html").read_text())
    targets = [(page_dir / urllib.parse.unquote(h)).resolve() for h in dom.links]
    assert len(targets) == (3 + 3 + 2) * 4  # seeds of sasrec, pop, gru4rec; 4 files each
    assert all(t.is_file() for t in targets)
    assert not (page_dir / "runs" / "unlisted-run").exists()
    assert not list((page_dir / "runs").rglob("*.ckpt"))


def test_a_page_from_old_results_still_says_what_it_can(tmp_path):
    """Results of a protocol this version does not register, with no run folder or
    artifact recorded: the card names the protocol and hash, says what is unknown, and
    the rows name their runs without links."""
    store = ResultsStore(tmp_path / "results.db")
    for seed in range(2):
        _run(
            tmp_path,
            store,
            "sasrec",
            seed,
            0.5,
            seconds=10.0,
            protocol="old-recipe",
            protocol_params=None,
            artifact=None,
            run_dir=None,
            git_commit=None,
        )
    write_leaderboards(build_tables(store), tmp_path / "site")
    text = (tmp_path / "site" / "index.html").read_text()
    assert '<b class="protocol-name">old-recipe</b>: not a registered protocol' in text
    assert "<dt>Parameters</dt><dd>not recorded</dd>" in text and "<dt>Size</dt>" not in text
    (board,) = Dom(text).tables
    (runs,) = _column(board, "runs")
    assert runs.count("folder absent") == 2 and runs.startswith("s0:") and "s1:" in runs
    assert not Dom(text).links
    assert "<dt>Runs</dt><dd>2 runs, finished 2026-11-30</dd>" in text  # no commit claimed


def _segments(paths: list[str]) -> list[tuple[float, float, float, float]]:
    """(x0, y0, x1, y1) of every 'M x y L x y' segment in SVG paths."""
    found = []
    for d in paths:
        nums = [float(n) for n in re.findall(r"-?\d+(?:\.\d+)?", d)]
        found += [tuple(nums[i : i + 4]) for i in range(0, len(nums) - 3, 4)]
    return found


def test_error_bars_span_each_rows_interval(site):
    """The accuracy plot's error bar of a row is as tall as its bootstrap interval, in the
    plot's own y scale (read off two rows: the ratio of heights is the ratio of widths)."""
    page_dir, tables = site
    (svg, _) = Dom((page_dir / "index.html").read_text()).svgs
    rows = {e["model"]: e for e in tables[0]["rows"]}
    heights, widths = {}, {}
    for model in ("sasrec", "gru4rec", "pop"):
        (bar,) = _segments(svg["ids"][f"board0-errorbar-{model}"])
        x0, y0, x1, y1 = bar
        assert x0 == pytest.approx(x1) and abs(y1 - y0) > 1  # vertical, drawn
        heights[model] = abs(y1 - y0)
        low, high = np.quantile(rows[model]["resampled"], [0.025, 0.975])
        widths[model] = high - low
    assert heights["sasrec"] / heights["pop"] == pytest.approx(
        widths["sasrec"] / widths["pop"], rel=0.02
    )
    assert heights["gru4rec"] / heights["pop"] == pytest.approx(
        widths["gru4rec"] / widths["pop"], rel=0.02
    )
    # sasrec's seeds took 120 to 140 s: a horizontal bar for the spread of cost
    (cost,) = _segments(svg["ids"]["board0-costbar-sasrec"])
    assert cost[1] == pytest.approx(cost[3]) and abs(cost[2] - cost[0]) > 1


def test_rows_trained_on_a_gpu_are_marked_in_the_cost_plot(tmp_path):
    """Seconds on a GPU are not seconds of this CPU: such a row is drawn hollow, named
    "(GPU)", and the axis names the card. A run that asked for the CPU on a GPU machine
    and a fitted model are not GPU rows."""
    from bench.leaderboard_tables import trained_on_gpu

    store = ResultsStore(tmp_path / "results.db")
    h200 = {"cpu": "test cpu", "torch_threads": 1, "gpu": "NVIDIA H200", "gpus": 1}
    gpu_config = {"lr": 0.001, "training": "sequences", "max_epochs": 5, "accelerator": "gpu"}
    for seed in range(2):
        _run(tmp_path, store, "sasrec", seed, 0.6, 8.0, hardware=h200, run_config=gpu_config)
        _run(tmp_path, store, "gru4rec", seed, 0.4, 600.0)
    (table,) = build_tables(store)
    rows = {e["model"]: e for e in table["rows"]}
    assert rows["sasrec"]["gpu"] == "NVIDIA H200" and rows["gru4rec"]["gpu"] is None
    on_cpu = {"hardware": h200, "run_config": {"accelerator": "cpu"}, "epochs": 3}
    assert trained_on_gpu(on_cpu) is None
    assert trained_on_gpu({"hardware": h200, "run_config": {}, "epochs": 0}) is None
    assert trained_on_gpu({"hardware": h200, "run_config": {}, "epochs": 3}) == "NVIDIA H200"
    used_cpu = {"hardware": h200, "run_config": {}, "epochs": 3, "compute": {"accelerator": "cpu"}}
    assert trained_on_gpu(used_cpu) is None  # what it used outweighs what it asked

    write_leaderboards([table], tmp_path / "site")
    html = (tmp_path / "site" / "index.html").read_text()
    (svg, *_) = Dom(html).svgs
    text = " ".join(svg["texts"])
    assert "sasrec (GPU)" in text and "gru4rec (GPU)" not in text and "gru4rec" in text
    assert "hollow: on NVIDIA H200" in text

    def marker_fill(model: str) -> str:
        group = html[html.index(f'id="board0-point-{model}"') :]
        return re.search(r"fill: ?(#[0-9a-f]{6})", group).group(1)

    assert marker_fill("sasrec") == "#ffffff" and marker_fill("gru4rec") != "#ffffff"


def test_tuned_rows_of_two_studies_keep_their_own_run_copies(tmp_path):
    """Every study names its final runs final-t<trial>-s<seed>: two tuned models whose best
    trials share a number must not publish into one folder (one overwrote the other)."""
    store = ResultsStore(tmp_path / "results.db")
    for model, quality in (("sasrec", 0.6), ("gru4rec", 0.4)):
        study = f"{model}-ml-100k-user-loo-any"
        for seed in range(2):
            folder = _run(tmp_path / study, store, model, seed, quality, 10.0)
            result = json.loads((folder / "result.json").read_text())
            result |= {"run_id": f"final-t3-s{seed}", "study": study, "best_trial": 3}
            (folder / "result.json").write_text(json.dumps(result))
            store.add(result, kind="final", study=study, trial=seed)
    (table,) = build_tables(store)
    write_leaderboards([table], tmp_path / "site")
    copies = tmp_path / "site" / "runs"
    for model in ("sasrec", "gru4rec"):
        for seed in range(2):
            copy = copies / f"{model}-ml-100k-user-loo-any--final-t3-s{seed}" / "result.json"
            assert json.loads(copy.read_text())["model"] == model
    html = (tmp_path / "site" / "index.html").read_text()
    assert 'href="runs/sasrec-ml-100k-user-loo-any--final-t3-s0/result.json"' in html
    assert 'href="runs/gru4rec-ml-100k-user-loo-any--final-t3-s0/result.json"' in html


CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--enable-logging=stderr",
    "--v=0",
]

# appended to a copy of the page: clicks two headers as a reader would and writes the
# model order after each click into the DOM for --dump-dom to show
CLICKS = """<script>
(function () {
  var table = document.querySelector('table.board');
  var heads = Array.prototype.slice.call(table.tHead.rows[0].cells);
  function order() {
    return Array.prototype.map.call(table.tBodies[0].rows, function (r) {
      return r.cells[1].textContent.trim();
    });
  }
  function click(name) {
    heads.filter(function (h) { return h.textContent.trim() === name; })[0].click();
    return order();
  }
  var out = {before: order(), model: click('model')};
  out.model_aria = heads[1].getAttribute('aria-sort');
  out.low = click('Δ top low');
  out.low_aria = document.querySelector('th[aria-sort]').textContent;
  out.low_again = click('Δ top low');
  var pre = document.createElement('pre');
  pre.id = 'sort-result';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();
</script>"""


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed")
def test_page_in_headless_chromium(site, tmp_path):
    page_dir, tables = site
    artifacts = Path(os.environ.get("BENCH_TEST_ARTIFACTS") or tmp_path) / "leaderboard-page"
    artifacts.mkdir(parents=True, exist_ok=True)
    base = ["chromium", *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    page = (page_dir / "index.html").as_uri()
    dom = subprocess.run([*base, "--dump-dom", page], capture_output=True, text=True, timeout=180)
    assert 'data-ready="1"' in dom.stdout, "the page's script did not run to its end"
    assert "Uncaught" not in dom.stderr, dom.stderr[-2000:]
    rendered = Dom(dom.stdout)
    # the card, as the browser built it
    assert 'data-protocol="user-loo"' in dom.stdout and "hashuserloo0" in dom.stdout
    assert re.search(r'class="test-targets" data-value="400">400<', dom.stdout)
    # the plots are in the DOM with their axis labels and error bars
    accuracy, curves = rendered.svgs
    assert "test NDCG@10 (95% interval)" in accuracy["texts"]
    assert any("seconds" in t for t in accuracy["texts"])
    bars = [i for i in accuracy["ids"] if "-errorbar-" in i]
    assert sorted(bars) == [
        "board0-errorbar-gru4rec",
        "board0-errorbar-narm",
        "board0-errorbar-pop",
        "board0-errorbar-sasrec",
    ]
    assert all(_segments(accuracy["ids"][i]) for i in bars)
    # interval columns hold numbers
    (board,) = rendered.tables
    lows = [t for t in _column(board, "Δ top low") if t not in ("", "–")]
    assert len(lows) == 2 and all(_number(t) < 0 for t in lows)  # gru4rec, pop below top

    # a real click sorts: a copy of the page with the clicks at its end
    clicked = page_dir / "index-clicks.html"
    clicked.write_text((page_dir / "index.html").read_text().replace("</body>", CLICKS + "</body>"))
    run = subprocess.run(
        [*base, "--dump-dom", clicked.as_uri()], capture_output=True, text=True, timeout=180
    )
    result = json.loads(
        re.search(r'<pre id="sort-result">(.*?)</pre>', run.stdout, re.S)
        .group(1)
        .replace("&amp;", "&")
    )
    by_ndcg = [e["model"] for e in tables[0]["rows"]]
    assert result["before"] == by_ndcg == ["sasrec", "gru4rec", "narm", "pop"]
    assert result["model"] == sorted(by_ndcg) and result["model_aria"] == "ascending"
    # high to low, then low to high; sasrec (the top) and narm (no ranks) have no bound:
    # last either way, in the order they stood
    assert result["low"] == ["gru4rec", "pop", "narm", "sasrec"]
    assert result["low_aria"] == "Δ top low"  # the one sorted column is marked
    assert result["low_again"] == ["pop", "gru4rec", "narm", "sasrec"]

    shot = artifacts / "index.png"
    subprocess.run(
        [*base, f"--screenshot={shot}", "--window-size=1400,1600", page],
        capture_output=True,
        timeout=180,
        check=True,
    )
    shutil.copy(page_dir / "index.html", artifacts / "index.html")
    image = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    blue = (np.abs(image - [0x2B, 0x6C, 0xB0]).sum(axis=2) < 40).sum()
    header = (np.abs(image - [0xED, 0xF2, 0xF7]).sum(axis=2) < 6).sum()
    assert blue > 50, "no plot points drawn"
    assert header > 500, "no table header drawn"
