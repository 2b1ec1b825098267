"""Issue 10: the bad-input audit as one table, run through the `bench` command line.

Each row is (what goes wrong, the command, the files made first, the exit code, words the
message must hold). Every row is checked the same way: the exit code, no traceback, the
words, a message that names its place (a file, a line, a column or an option) and a fix,
and that nothing under the case's folder was written or changed (a refused run leaves no
run folder behind, a victim folder outside runs/ keeps its file). Usage errors that click
itself raises (a value below an option's minimum, a choice not offered) name the option
in quotes and point at `--help` as their fix.

Placeholders in the commands and file names: {tmp} the case's own folder, {runs} its
runs/ folder, {data} the real data sets (../shared/data), {base} the module's tiny data
set and cache, where one finished gru4rec run (1 epoch) is made once and copied into a
case that needs it (the FINISHED_RUN entry of its files).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import shutil
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from bench.cli import app
from bench.training.run import LOCKS

torch.set_num_threads(1)

DATA_DIR = Path(
    os.environ.get("BENCH_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data")
).resolve()

FINISHED_RUN = object()  # files entry: copy the module's finished run folder here
DIR = object()  # files entry: an empty folder
REMOVED = object()  # files entry: delete this file (of a copied run)


class Truncated:
    """files entry: cut this file (of a copied run) to `size` bytes."""

    def __init__(self, size: int) -> None:
        self.size = size


# ------------------------------------------------------------------ small inputs

START = 1511539200  # 2017-11-25 00:00 +08:00, inside Taobao's official window
TAOBAO = "1,2,3,pv,1511544070\n1,5,3,buy,1511544080\n2,2,3,cart,1511544090\n"
TAOBAO_WINDOW = "".join(
    f"{u},{k % 7 + 1},{k % 3 + 1},pv,{START + k * 40_000 + u}\n"
    for u in range(1, 13)
    for k in range(20)
)  # 240 lines inside the official window
TAOBAO_MS = "".join(
    f"{u},{k % 7 + 1},{k % 3 + 1},pv,{(START + k * 40_000 + u) * 1000}\n"
    for u in range(1, 13)
    for k in range(20)
)
VIEWS_HEADER = "session_id;user_id;item_id;timeframe;eventdate\n"
VIEWS = VIEWS_HEADER + "1;NA;81766;526309;2016-05-09\n1;7;31331;1031018;2016-05-09\n"
TMALL_HEADER = "user_id,item_id,cat_id,seller_id,brand_id,time_stamp,action_type\n"


def _ms_file_with_one_seconds_value() -> str:
    """2,000 millisecond times; line 1501 (header = line 1) holds seconds."""
    rows = [f"u{i % 20},{i % 9 + 1},{(1_600_000_000 + i * 60) * 1000}" for i in range(2000)]
    rows[1499] = f"u3,4,{1_600_000_000 + 1499 * 60}"
    return "user,item,time\n" + "\n".join(rows) + "\n"


MS_FAR = _ms_file_with_one_seconds_value()
SWAPPABLE = "uid,sku,ts\n" + "".join(
    f"u{i % 5},{1000 + i % 9},{1_600_000_000 + i * 60}\n" for i in range(100)
)
USER_ITEM = "".join(f"{u} {k + 1}\n" for u in range(1, 20) for k in range(8))
CUSTOM_ACTIONS = "user,item,time,action\n" + "1,2,1700000000,view\n" * 5


# ------------------------------------------------------------------ commands


def run(*args: str, data: str = "{data}") -> list[str]:
    """`bench run` with everything it writes kept under the case's folder."""
    return ["run", *args, "--no-wandb", "--runs-dir", "{runs}", "--cache-dir", "{tmp}/cache",
            "--data-dir", data]  # fmt: skip


def pop(*args: str) -> list[str]:
    return run("--model", "pop", "--dataset", "ml-100k", *args)


# the tiny gru4rec run of the module fixture; cases add --max-epochs, --set, --resume
TINY = ["run", "--model", "gru4rec", "--dataset", "custom", "--data-dir", "{base}/data",
        "-o", "path=log.csv", "--protocol", "user-loo", "--no-wandb", "--runs-dir", "{runs}",
        "--cache-dir", "{base}/cache", "--set", "embedding_dim=8", "--set", "hidden_size=8",
        "--threads", "1", "--set", "run_id=x"]  # fmt: skip


def prepare(dataset: str, *args: str) -> list[str]:
    return ["data", "prepare", "--dataset", dataset, "--data-dir", "{tmp}",
            "--cache-dir", "{tmp}/cache", *args]  # fmt: skip


def custom(name: str, *args: str) -> list[str]:
    return prepare("custom", "-o", f"path={name}", *args)


def sweep(*args: str) -> list[str]:
    return ["sweep", *args, "--no-wandb", "--storage", "{tmp}/optuna.db", "--results",
            "{tmp}/results.db", "--cache-dir", "{tmp}/cache", "--data-dir", "{data}"]  # fmt: skip


SWEEP_POP = ["--model", "pop", "--dataset", "ml-100k"]
RUN_COPY = {"runs": FINISHED_RUN}
NO_GPU = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")

# (what goes wrong, command, files made first, exit code, words the message holds)
CASES = [
    # ---------------------------------------------------------- run identity and paths
    ("run_id escaping runs/ is refused and the victim folder keeps its file",
     pop("--set", "run_id=../victim"), {"victim/keep.txt": "mine"}, 2,
     ("run_id", "plain folder name", "'../victim'")),
    ("an absolute run_id is refused",
     pop("--set", "run_id={tmp}/abs"), {}, 2, ("run_id", "plain folder name")),
    ("a run_id holding a slash is refused",
     pop("--set", "run_id=a/b"), {}, 2, ("run_id", "'a/b'")),
    ("a sweep study name escaping its folder is refused",
     sweep(*SWEEP_POP, "--trials", "1", "--study", "../../x"), {}, 2,
     ("--study", "cannot name a folder", "'../../x'")),
    # ---------------------------------------------------------- bad values before any data
    ("embedding_dim=0 is refused before any data",
     run("--model", "gru4rec", "--dataset", "ml-100k", "--set", "embedding_dim=0"), {}, 2,
     ("--set", "embedding_dim", "greater than or equal to 1")),
    ("a hyperparameter the model lacks (pop has no embedding_dim)",
     pop("--set", "embedding_dim=64"), {}, 2, ("--set", "unknown key(s) embedding_dim", "pop")),
    ("dropout above 1 is refused",
     run("--model", "gru4rec", "--dataset", "ml-100k", "--set", "dropout=2"), {}, 2,
     ("--set", "dropout", "less than 1")),
    ("sasrec n_heads that does not divide embedding_dim is refused",
     run("--model", "sasrec", "--dataset", "ml-100k", "--set", "n_heads=3"), {}, 2,
     ("--set", "not divisible by n_heads 3", "divisors")),
    ("a negative seed is refused",
     pop("--seed", "-1"), {}, 2, ("--seed", "greater than or equal to 0", "-1")),
    pytest.param(
        "--accelerator gpu on a machine without a GPU is refused before any data",
        pop("--accelerator", "gpu"), {}, 2, ("--accelerator", "no CUDA GPU", "cpu"),
        marks=NO_GPU),
    ("an unknown accelerator (tpu) is refused",
     pop("--accelerator", "tpu"), {}, 2, ("--accelerator", "'tpu'", "auto, cpu, gpu")),
    ("--devices abc is refused",
     pop("--devices", "abc"), {}, 2, ("--devices", "'abc'", "number of devices")),
    ("--devices 0 is refused",
     pop("--devices", "0"), {}, 2, ("--devices", "number of devices")),
    ("a negative learning rate is refused",
     pop("--set", "lr=-1"), {}, 2, ("--set lr", "greater than 0")),
    ("batch_size=0 is refused",
     pop("--set", "batch_size=0"), {}, 2, ("--set batch_size", "greater than or equal to 1")),
    ("an unknown monitor metric (auc) is refused",
     pop("--set", "monitor=auc"), {}, 2, ("--set monitor", "'auc'", "ndcg@10")),
    ("training=sequences for a model that reads whole histories (srgnn) is refused",
     run("--model", "srgnn", "--dataset", "ml-100k", "--set", "training=sequences"), {}, 2,
     ("training", "srgnn", "prefixes", "training=sequences works for", "sasrec")),
    ("an unknown training mode is refused",
     pop("--set", "training=windows"), {}, 2, ("--set training", "'windows'", "prefixes")),
    ("an unknown loss is refused",
     pop("--set", "loss=foo"), {}, 2, ("--set loss", "'foo'", "'sampled'")),
    ("an unknown optimizer is refused",
     pop("--set", "optimizer=sgd"), {}, 2, ("--set optimizer", "'sgd'", "lazy_adamw")),
    ("--max-epochs 0 is refused",
     pop("--max-epochs", "0"), {}, 2, ("--max-epochs", "greater than or equal to 1")),
    ("--threads 0 is refused",
     pop("--threads", "0"), {}, 2, ("--threads", "greater than or equal to 1")),
    ("an unknown model is refused with the list of models",
     run("--model", "nosuch", "--dataset", "ml-100k"), {}, 2,
     ("--model", "unknown model 'nosuch'", "gru4rec")),
    ("an unknown data set is refused with the list of data sets",
     run("--model", "pop", "--dataset", "nosuch"), {}, 2,
     ("--dataset", "unknown data set 'nosuch'", "ml-100k")),
    ("an unknown protocol is refused with the list of protocols",
     pop("--protocol", "nosuch"), {}, 2, ("--protocol", "unknown protocol 'nosuch'", "user-loo")),
    ("an unknown hyperparameter under model. is refused with the model's keys",
     run("--model", "gru4rec", "--dataset", "ml-100k", "--set", "model.nosuch=1"), {}, 2,
     ("--set", "nosuch", "hidden_size")),
    ("--set without = is refused",
     pop("--set", "lr"), {}, 2, ("--set", "expected key=value", "'lr'")),
    ("a key given twice is refused",
     pop("--set", "lr=0.1", "--set", "lr=0.2"), {}, 2, ("--set", "lr is given twice", "once")),
    ("an unclosed list value is refused",
     pop("--set", "k=[1,"), {}, 2, ("--set", "cannot read the value of k", "close the list")),
    ("an adapter option a data set does not take is refused",
     pop("-o", "nosuch=1"), {}, 2, ("option nosuch", "has no option 'nosuch'", "no options")),
    ("--target all is not a target",
     pop("--target", "all"), {}, 2, ("'--target'", "'all'", "'any', 'buy'")),
    ("a data folder without the data set's files is named with where to get them",
     run("--model", "pop", "--dataset", "ml-100k", data="{tmp}/nodata"), {}, 2,
     ("{tmp}/nodata", "no ml-100k.inter or u.data", "grouplens.org")),
    # ---------------------------------------------------------- results stores
    ("run --results naming a folder is refused",
     pop("--results", "{tmp}/store"), {"store": DIR}, 2,
     ("--results", "is a folder, not a results store")),
    ("run --results naming a text file is refused and the file kept",
     pop("--results", "{tmp}/notes.txt"), {"notes.txt": "my notes\n"}, 2,
     ("--results", "file is not a database", "not a SQLite results store")),
    ("run --results with an unknown scheme is refused",
     pop("--results", "mysql://x"), {}, 2, ("--results", "unknown storage scheme 'mysql'")),
    ("leaderboard --results naming a text file is refused and the file kept",
     ["leaderboard", "--results", "{tmp}/notes.txt", "--out", "{tmp}/lb"],
     {"notes.txt": "my notes\n"}, 2, ("--results", "file is not a database")),
    ("leaderboard --results naming a folder is refused",
     ["leaderboard", "--results", "{tmp}/store", "--out", "{tmp}/lb"], {"store": DIR}, 2,
     ("--results", "is a folder, not a results store")),
    ("leaderboard --results with an unknown scheme is refused",
     ["leaderboard", "--results", "mysql://x", "--out", "{tmp}/lb"], {}, 2,
     ("--results", "unknown storage scheme 'mysql'")),
    ("leaderboard on an empty results store says there is nothing yet",
     ["leaderboard", "--results", "{tmp}/results.db", "--out", "{tmp}/lb"], {}, 2,
     ("--results", "has no results", "bench run")),
    # ---------------------------------------------------------- --resume
    ("--resume with nothing to resume is refused",
     [*TINY[:-2], "--max-epochs", "2", "--resume"], {}, 2,
     ("--resume", "nothing to resume", "drop --resume")),
    ("--resume from a truncated last.ckpt names the checkpoint",
     [*TINY, "--max-epochs", "2", "--resume"],
     {**RUN_COPY, "runs/x/checkpoints/last.ckpt": Truncated(100)}, 2,
     ("{runs}/x/checkpoints/last.ckpt", "--resume", "truncated", "drop --resume")),
    ("--resume with a changed hyperparameter names the changed key",
     [*TINY, "--max-epochs", "2", "--set", "dropout=0.1", "--resume"], RUN_COPY, 2,
     ("--resume", "cannot resume x", "dropout", "0.1")),
    ("--resume of a finished run with the same settings says it has finished",
     [*TINY, "--max-epochs", "1", "--resume"], RUN_COPY, 2,
     ("--resume", "already finished", "larger --max-epochs")),
    ("--resume into a folder that is no run is refused and the folder kept",
     [*TINY, "--max-epochs", "1", "--resume"], {"runs/x/keep.txt": "mine"}, 2,
     ("--resume", "no identity.json", "drop --resume")),
    ("a fresh run into a folder holding another run is refused and the run kept",
     [*TINY, "--max-epochs", "1", "--set", "dropout=0.1"], RUN_COPY, 2,
     ("run_id", "holds another run", "dropout")),
    # ---------------------------------------------------------- predict and evaluate
    ("predict on a folder without result.json is refused",
     ["predict", "--run", "{tmp}/half", "--history", "1,2"], {"half/config.yaml": "{}\n"}, 2,
     ("{tmp}/half", "--run", "no result.json")),
    ("evaluate on a folder without result.json is refused",
     ["evaluate", "--run", "{tmp}/half"], {"half/config.yaml": "{}\n"}, 2,
     ("{tmp}/half", "--run", "no result.json")),
    ("predict on a run whose result.json is damaged is refused",
     ["predict", "--run", "{runs}/x", "--history", "1,2"],
     {**RUN_COPY, "runs/x/result.json": "{not json"}, 2, ("--run", "damaged", "result.json")),
    ("predict on a run whose checkpoint was moved away names the checkpoint",
     ["predict", "--run", "{runs}/x", "--history", "1,2"],
     {**RUN_COPY, "runs/x/checkpoints/best.ckpt": REMOVED}, 2,
     ("{runs}/x/result.json", "--run", "checkpoints/best.ckpt", "is missing")),
    ("evaluate on a run whose checkpoint was moved away names the checkpoint",
     ["evaluate", "--run", "{runs}/x"], {**RUN_COPY, "runs/x/checkpoints/best.ckpt": REMOVED}, 2,
     ("{runs}/x/result.json", "--run", "checkpoints/best.ckpt", "is missing")),
    ("predict from a history of only unknown items is refused",
     ["predict", "--run", "{runs}/x", "--history", "nosuch1,nosuch2"], RUN_COPY, 2,
     ("--history", "none of the history's items is known", "nosuch1, nosuch2")),
    ("predict --k 0 is refused",
     ["predict", "--run", "{runs}/x", "--history", "1,2", "--k", "0"], RUN_COPY, 2,
     ("'--k'", "greater than or equal to 1")),
    ("evaluate --split foo is refused",
     ["evaluate", "--run", "{runs}/x", "--split", "foo"], RUN_COPY, 2,
     ("--split", "unknown split 'foo'", "test or valid")),
    # ---------------------------------------------------------- data: files and folders
    ("a folder where the raw file belongs is named",
     prepare("taobao"), {"taobao/UserBehavior.csv": DIR}, 2,
     ("{tmp}/taobao/UserBehavior.csv", "is a folder", "put the file UserBehavior.csv")),
    ("--cache-dir naming an existing file is refused and the file kept",
     ["data", "prepare", "--dataset", "taobao", "--data-dir", "{tmp}", "--cache-dir",
      "{tmp}/cachefile"], {"taobao/UserBehavior.csv": TAOBAO_WINDOW, "cachefile": "x"}, 2,
     ("--cache-dir", "is a file", "folder")),
    ("--cache-dir below an existing file is refused",
     ["data", "prepare", "--dataset", "taobao", "--data-dir", "{tmp}", "--cache-dir",
      "{tmp}/cachefile/below"], {"taobao/UserBehavior.csv": TAOBAO_WINDOW, "cachefile": "x"}, 2,
     ("--cache-dir", "is a file, or lies inside one")),
    ("a gzip file named .csv is told to be decompressed",
     prepare("taobao"), {"taobao/UserBehavior.csv": gzip.compress(TAOBAO_WINDOW.encode())}, 2,
     ("{tmp}/taobao/UserBehavior.csv", "gzip", "decompress")),
    ("a data stats --artifact folder that holds no artifact is named",
     ["data", "stats", "--artifact", "{tmp}/none"], {}, 2,
     ("{tmp}/none/meta.json", "no prepared artifact", "bench data prepare")),
    ("data synth --rows 0 is refused",
     ["data", "synth", "taobao", "--rows", "0", "--data-dir", "{tmp}"], {}, 2,
     ("'--rows'", "greater than or equal to 1")),
    # ---------------------------------------------------------- data: time units, mappings
    ("Taobao times in milliseconds are named as milliseconds",
     prepare("taobao"), {"taobao/UserBehavior.csv": TAOBAO_MS}, 2,
     ("{tmp}/taobao/UserBehavior.csv", "milliseconds", "divide them by 1000")),
    ("a seconds value far down a milliseconds file names its line and column",
     custom("log.csv"), {"custom/log.csv": MS_FAR}, 2,
     ("line 1501", "column 'time'", "'1600089940'", "milliseconds", "one unit")),
    ("a swapped item/time mapping is named with the likely one",
     custom("log.csv", "--columns", "user=uid,item=ts,time=sku"), {"custom/log.csv": SWAPPABLE},
     2, ("--columns", "looks swapped", "user=uid,item=sku,time=ts")),
    ("an unknown column in --columns names the columns found",
     custom("log.csv", "--columns", "user=uid,item=sku,time=when"),
     {"custom/log.csv": SWAPPABLE}, 2,
     ("line 1", "column 'when'", "no column 'when'", "uid, sku, ts", "columns=")),
    ("a misspelt column in --columns is guessed",
     custom("log.csv", "--columns", "user=uid,item=sku,time=tss"),
     {"custom/log.csv": SWAPPABLE}, 2, ("column 'tss'", "no column 'tss'")),
    ("-o file= is not an option of custom (it is path=)",
     prepare("custom", "-o", "file=log.csv"), {"custom/log.csv": SWAPPABLE}, 2,
     ("option file", "has no option 'file'", "path")),
    ("a header-less space-separated user item file read as if it had a header",
     custom("log.txt", "--columns", "user=user,item=item"), {"custom/log.txt": USER_ITEM}, 2,
     ("line 1", "looks like data, not a header", "header=false")),
    ("header=true on a header-less user item file cannot find the item",
     custom("log.txt", "-o", "header=true"), {"custom/log.txt": USER_ITEM}, 2,
     ("option columns", "which column holds the item", "columns=")),
    ("a RecBole .inter file with an unknown type tag names the column",
     custom("x.inter"),
     {"custom/x.inter": "user_id:token\titem_id:tokn\ttimestamp:float\n1\t2\t1600000000\n"}, 2,
     ("line 1", "column 'item_id:tokn'", "'tokn'", "token, float")),
    ("a comma-separated RecBole .inter file is told to use tabs",
     custom("x.inter"),
     {"custom/x.inter": "user_id:token,item_id:token,timestamp:float\n1,2,1600000000\n"}, 2,
     ("line 1", "comma-separated", "tab-separated", "separator=','")),
    ("a custom file with the wrong separator names the option",
     custom("log.csv", "-o", "separator=,", "--columns", "user=user,item=item,time=time"),
     {"custom/log.csv": "user;item;time\n1;2;1700000000\n"}, 2, ("line 1", "separator=';'")),
    ("a header-less CSV mapped by names is told to map by position",
     custom("log.csv", "--columns", "user=a,item=b"), {"custom/log.csv": "1,2,1700000000\n"}, 2,
     ("line 1", "header")),
    ("an unknown behaviour in a custom file names its line and column",
     custom("log.csv"), {"custom/log.csv": CUSTOM_ACTIONS + "1,3,1700000100,refund\n"}, 2,
     ("line 7", "column 'action'", "'refund'", "behaviors=")),
    ("an unparseable time in a custom file names its line and column",
     custom("log.csv"), {"custom/log.csv": CUSTOM_ACTIONS + "1,4,not-a-time,view\n"}, 2,
     ("line 7", "column 'time'", "'not-a-time'")),
    ("a custom file whose item column cannot be guessed asks for --columns",
     custom("log.csv"), {"custom/log.csv": "a,b\n1,2\n"}, 2, ("option columns", "a, b")),
    ("a .parquet file that is not Parquet is named",
     custom("t.parquet", "--columns", "user=u,item=i"), {"custom/t.parquet": "not parquet"}, 2,
     ("{tmp}/custom/t.parquet", "Parquet")),
    # ---------------------------------------------------------- data: the audited files
    ("an empty file is named",
     prepare("taobao"), {"taobao/UserBehavior.csv": ""}, 2, ("line 1", "empty")),
    ("a whitespace-only file is empty",
     prepare("taobao"), {"taobao/UserBehavior.csv": "\n\n  \n"}, 2, ("line 1", "empty")),
    ("a wrong delimiter is named",
     prepare("taobao"), {"taobao/UserBehavior.csv": TAOBAO.replace(",", ";")}, 2,
     ("line 1", "semicolon")),
    ("a truncated last line is named with its line",
     prepare("taobao"), {"taobao/UserBehavior.csv": TAOBAO + "3,4,5,pv"}, 2,
     ("line 4", "truncated", "delete line 4")),
    ("a bad timestamp names line N and the column",
     prepare("taobao"), {"taobao/UserBehavior.csv": TAOBAO + "4,4,4,pv,2017-11-25 10:00\n"}, 2,
     ("line 4", "column 'timestamp'", "Unix")),
    ("a bad timestamp reached through bench run names line N and the column",
     run("--model", "pop", "--dataset", "taobao", data="{tmp}"),
     {"taobao/UserBehavior.csv": TAOBAO_WINDOW + "4,4,4,pv,soon\n"}, 2,
     ("line 241", "column 'timestamp'", "'soon'")),
    ("a short line inside the file is named",
     prepare("taobao"), {"taobao/UserBehavior.csv": "1,2,3,pv,1511544070\n1,5,3,buy\n" + TAOBAO},
     2, ("line 2", "4 of 5")),
    ("an extra field is named",
     prepare("taobao"), {"taobao/UserBehavior.csv": TAOBAO + "1,2,3,pv,1511544070,9\n"}, 2,
     ("line 4", "6 fields")),
    ("a bad value after leading blank lines keeps its line number",
     prepare("taobao"), {"taobao/UserBehavior.csv": "\n\n" + TAOBAO + "4,4,4,pv,x\n"}, 2,
     ("line 6", "column 'timestamp'", "'x'")),
    ("a short first line is named",
     prepare("taobao"), {"taobao/UserBehavior.csv": "1,2,3,pv\n" + TAOBAO}, 2,
     ("line 1", "4 fields")),
    ("an unknown behaviour is named",
     prepare("taobao"), {"taobao/UserBehavior.csv": TAOBAO + TAOBAO.replace("cart", "click")}, 2,
     ("line 6", "column 'behavior'", "'click'")),
    ("a negative id is named",
     prepare("taobao"), {"taobao/UserBehavior.csv": TAOBAO + "-1,2,3,pv,1511544070\n"}, 2,
     ("line 4", "column 'user_id'", "'-1'")),
    ("an id out of range is named",
     prepare("taobao"), {"taobao/UserBehavior.csv": "1,99999999999,3,pv,1511544070\n" + TAOBAO},
     2, ("line 1", "column 'item_id'", "0..4294967295")),
    ("a blank line above a header is named",
     prepare("diginetica"), {"diginetica/sample_train-item-views.csv": "\n" + VIEWS}, 2,
     ("line 1", "header")),
    ("a missing column is named",
     prepare("diginetica"),
     {"diginetica/sample_train-item-views.csv": VIEWS.replace("item_id", "product")}, 2,
     ("line 1", "column 'item_id'", "no column 'item_id'")),
    ("a misnamed column is guessed",
     prepare("diginetica"),
     {"diginetica/sample_train-item-views.csv": VIEWS.replace("eventdate", "event_date")}, 2,
     ("line 1", "column 'eventdate'", "did you mean 'event_date'")),
    ("commas instead of semicolons are named",
     prepare("diginetica"), {"diginetica/sample_train-item-views.csv": VIEWS.replace(";", ",")},
     2, ("line 1", "comma-separated")),
    ("a file of only a header has no data rows",
     prepare("diginetica"), {"diginetica/sample_train-item-views.csv": VIEWS_HEADER}, 2,
     ("line 2", "no data rows")),
    ("an impossible date is named",
     prepare("diginetica"),
     {"diginetica/sample_train-item-views.csv": VIEWS + "2;NA;5;10;2016-13-01\n"}, 2,
     ("line 4", "column 'eventdate'", "'2016-13-01'")),
    ("a missing item is named",
     prepare("diginetica"),
     {"diginetica/sample_train-item-views.csv": VIEWS + "2;NA;;10;2016-05-09\n"}, 2,
     ("line 4", "column 'item_id'", "missing")),
    ("a bad ISO time is named",
     prepare("yoochoose"),
     {"yoochoose/yoochoose-clicks.dat":
      "1,2014-04-07T10:51:09.277Z,214536502,0\n1,yesterday,214536500,0\n"}, 2,
     ("line 2", "column 'timestamp'", "ISO")),
    ("an unknown RetailRocket event is named",
     prepare("retailrocket"),
     {"retailrocket/events.csv": "timestamp,visitorid,event,itemid,transactionid\n"
      "1433221332117,1,view,2,\n1433221332118,1,remove,2,\n"}, 2,
     ("line 3", "column 'event'", "'remove'")),
    ("an unknown Tmall action is named",
     prepare("tmall"),
     {"tmall/user_log_format1.csv": TMALL_HEADER + "1,2,3,4,5,1111,0\n1,2,3,4,5,1111,7\n"}, 2,
     ("line 3", "column 'action_type'", "'7'")),
    ("an impossible Tmall day is named",
     prepare("tmall"),
     {"tmall/user_log_format1.csv": TMALL_HEADER + "1,2,3,4,5,1111,0\n1,2,3,4,5,1340,2\n"}, 2,
     ("line 3", "column 'time_stamp'", "'1340'")),
    ("ml-1m with single colons is told to use '::'",
     prepare("ml-1m"), {"ml-1m/ratings.dat": "1:1193:5:978300760\n"}, 2, ("line 1", "'::'")),
    ("a sequence file with a header is named",
     prepare("diginetica-dynamicrec"), {"diginetica-dynamicrec/diginetica.csv": "items\n1,2,3\n"},
     2, ("line 1", "not a sequence")),
    ("a negative id in a sequence file is named",
     prepare("diginetica-dynamicrec"),
     {"diginetica-dynamicrec/diginetica.csv": "1,2,3\n4,-5,6\n"}, 2,
     ("line 2", "column 'item_id'", "'-5'")),
    ("an empty sequence file is named",
     prepare("yoochoose-dynamicrec"), {"yoochoose-dynamicrec/yoochoose.csv": "\n"}, 2,
     ("line 1", "empty")),
    ("an unknown data set in data prepare is refused",
     prepare("no-such-set"), {}, 2, ("--dataset", "unknown data set 'no-such-set'")),
    ("-o without = in data prepare is refused",
     prepare("taobao", "-o", "nokey"), {}, 2, ("--option", "expected key=value")),
    # ---------------------------------------------------------- sweep, automl
    ("sweep --trials 0 is refused",
     sweep(*SWEEP_POP, "--trials", "0"), {}, 2, ("'--trials'", "greater than or equal to 1")),
    ("sweep --workers 0 is refused",
     sweep(*SWEEP_POP, "--trials", "1", "--workers", "0"), {}, 2,
     ("'--workers'", "greater than or equal to 1")),
    ("sweep --storage with an unknown scheme is refused",
     ["sweep", *SWEEP_POP, "--trials", "1", "--no-wandb", "--storage", "mysql://x",
      "--results", "{tmp}/results.db"], {}, 2,
     ("--storage", "unknown storage scheme 'mysql'", "postgresql://")),
    ("sweep --set of a key that is no run setting is refused",
     sweep(*SWEEP_POP, "--trials", "1", "--set", "nosuch=1"), {}, 2,
     ("--set", "unknown run setting(s) nosuch", "sweeps take run settings")),
    ("sweep of an unknown model is refused",
     sweep("--model", "nosuch", "--dataset", "ml-100k", "--trials", "1"), {}, 2,
     ("--model", "unknown model 'nosuch'")),
    ("automl --models naming an unknown model is refused",
     ["automl", "--dataset", "ml-100k", "--models", "nonexistent", "--trials", "1",
      "--no-wandb", "--storage", "{tmp}/optuna.db", "--results", "{tmp}/results.db",
      "--out", "{tmp}/lb"], {}, 2, ("--model", "unknown model 'nonexistent'", "gru4rec")),
    # ---------------------------------------------------------- found by this table
    ("a continued run whose source checkpoint is truncated copies nothing",
     [*TINY[:-2], "--max-epochs", "2", "--resume"],
     {**RUN_COPY, "runs/x/checkpoints/last.ckpt": Truncated(100)}, 2,
     ("{runs}/x/checkpoints/last.ckpt", "truncated")),
    ("--runs-dir naming a file is refused",
     ["run", "--model", "pop", "--dataset", "ml-100k", "--no-wandb", "--runs-dir",
      "{tmp}/afile", "--cache-dir", "{tmp}/cache", "--data-dir", "{data}"],
     {"afile": "notes\n"}, 2,
     ("--runs-dir", "is a file, not a folder")),
    ("a --config file that does not exist is named with a fix",
     pop("--config", "{tmp}/nope.yaml"), {}, 2, ("--config", "not found", "--set key=value")),
    ("a --config file that is not YAML names its line",
     pop("--config", "{tmp}/bad.yaml"), {"bad.yaml": "lr: [unclosed\n"}, 2,
     ("bad.yaml", "line 2", "not valid YAML", "key: value")),
    ("a --config file holding a list is refused",
     pop("--config", "{tmp}/list.yaml"), {"list.yaml": "- lr\n- 0.1\n"}, 2,
     ("list.yaml", "mapping of key: value", "max_epochs: 50")),
    ("sweep --gpus with names instead of numbers is refused",
     sweep(*SWEEP_POP, "--trials", "1", "--gpus", "a,b"), {}, 2,
     ("--gpus", "expected GPU numbers", "nvidia-smi")),
    ("data stats without a data set says how to name one",
     ["data", "stats"], {}, 2, ("--dataset", "bench data list")),
    ("data fetch of a data set without a download link says where to get it",
     ["data", "fetch", "--dataset", "taobao", "--data-dir", "{tmp}/f"], {}, 2,
     ("--dataset", "no public direct download link", "UserBehavior.csv")),
    ("an unknown protocol parameter names --set",
     pop("--set", "protocol.nosuch=1"), {}, 2,
     ("option --set", "has no parameter(s) nosuch", "parameters of user-loo")),
    ("dashboard of a study storage that does not exist is refused, nothing created",
     ["dashboard", "--storage", "{tmp}/missing.db"], {}, 2,
     ("--storage", "no study storage", "bench sweep")),
]  # fmt: skip

IGNORED = ("results.db", "results.db-wal", "results.db-shm", "results.db-journal")


def _case_id(case) -> str:
    return case.values[0] if hasattr(case, "values") else case[0]


def _params():
    for case in CASES:
        if hasattr(case, "values"):
            yield pytest.param(*case.values[1:], id=case.values[0], marks=case.marks)
        else:
            yield pytest.param(*case[1:], id=case[0])


def test_the_table_is_large_and_its_ids_unique():
    ids = [_case_id(c) for c in CASES]
    assert len(ids) >= 60 and len(set(ids)) == len(ids)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    """A tiny data set (40 users x 12 events), its cache, and runs/x: gru4rec, 1 epoch."""
    root = tmp_path_factory.mktemp("base")
    (root / "data").mkdir()
    rows = ["user,item,time"] + [
        f"u{u},{(u * 7 + k * 3) % 30 + 1},{1_600_000_000 + u * 1000 + k * 60}"
        for u in range(40)
        for k in range(12)
    ]
    (root / "data" / "log.csv").write_text("\n".join(rows) + "\n")
    args = _expand([*TINY, "--max-epochs", "1"], tmp=root, runs=root / "runs", base=root)
    result = CliRunner().invoke(app, args, env=_env(root))
    assert result.exit_code == 0, result.output
    assert (root / "runs" / "x" / "result.json").exists()
    return root


def _env(tmp: Path) -> dict:
    return {
        "COLUMNS": "1000",
        "NO_COLOR": "1",
        "BENCH_DATA_DIR": str(DATA_DIR),
        "BENCH_CACHE_DIR": str(tmp / "cache"),
        "WANDB_MODE": "disabled",
    }


def _expand(values, *, tmp: Path, runs: Path, base: Path | None) -> list[str]:
    out = []
    for value in values:
        value = value.replace("{tmp}", str(tmp)).replace("{runs}", str(runs))
        value = value.replace("{data}", str(DATA_DIR))
        if base is not None:
            value = value.replace("{base}", str(base))
        out.append(value)
    return out


def _make(tmp: Path, files: dict, base: Path | None) -> None:
    for name, content in files.items():
        path = tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if content is FINISHED_RUN:
            shutil.copytree(base / "runs", path)
        elif content is DIR:
            path.mkdir()
        elif content is REMOVED:
            path.unlink()
        elif isinstance(content, Truncated):
            with open(path, "r+b") as f:
                f.truncate(content.size)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)


def _snapshot(root: Path) -> dict[str, str]:
    """Every file under `root` by content: not the artifact cache, a results store or the
    per-run lock files (taken before a run is checked, they hold no result)."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if rel.parts[0] == "cache" or LOCKS in rel.parts or path.name in IGNORED:
            continue
        if not path.is_file():
            continue
        out[rel.as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def _plain(text: str) -> str:
    """The output as one line: rich's box borders gone, wrapped lines joined."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


@pytest.mark.parametrize(("args", "files", "code", "words"), list(_params()))
def test_bad_input_is_answered_with_its_place_and_a_fix(
    args, files, code, words, tmp_path, request
):
    needs_base = any(v is FINISHED_RUN for v in files.values()) or any("{base}" in a for a in args)
    base = request.getfixturevalue("base") if needs_base else None
    runs = tmp_path / "runs"
    _make(tmp_path, files, base)
    before = _snapshot(tmp_path)

    result = CliRunner().invoke(app, _expand(args, tmp=tmp_path, runs=runs, base=base),
                                env=_env(tmp_path))  # fmt: skip

    output = _plain(result.output)
    assert "Traceback" not in result.output, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == code, result.output
    for word in _expand(words, tmp=tmp_path, runs=runs, base=base):
        assert word in output, f"{word!r} not in: {output}"
    # the place: an option, a line, a column or a file, before the fix
    head = output.split("fix:")[0]
    usage = "Invalid value for '--" in head  # click's own usage error
    assert usage or "error:" in head, output
    assert usage or any(w in head for w in ("option ", "line ", "column ", str(tmp_path))), (
        f"no file, line, column or option named: {output}"
    )
    assert "fix:" in output or (usage and "--help' for help" in output), f"no fix: {output}"
    # nothing written: no run folder made, no file (the victim's included) changed
    assert _snapshot(tmp_path) == before
