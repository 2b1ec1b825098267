"""Times RecBole 1.2.1 on its bundled ml-100k; runs INSIDE the RecBole venv, not bench's.

Started by `benchmarks/campaigns/recbole_compare.py` (one process per model, one torch thread).
Uses RecBole's lower-level API (Config, create_dataset, data_preparation, get_model,
get_trainer; `recbole.quick_start` would import ray) with its sequential setup:
leave-one-out by time, full ranking, MAX_ITEM_LIST_LENGTH 50, CE loss, no training
negatives, Adam. Times `trainer._train_epoch` (one pass over the augmented training
prefixes, as `trainer.fit` runs it) and `trainer._valid_epoch` (a full-ranking
validation pass with metrics, as `fit` runs it after each epoch), each in wall and
CPU (process) seconds. Prints one JSON line on stdout.

With `--batches N` each epoch stops after its first N training batches and the
epoch seconds are extrapolated to the whole epoch (x batches per epoch / N), exactly
as bench's side does, to keep a comparison of six models within a session's time on a
busy machine; the measured seconds and N are reported too.

Usage: python recbole_worker.py --model GRU4Rec --workdir DIR [--epochs N]
       [--batches N] [--fit [--deadline UNIX_TIME]] [--set key=json_value ...]
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time


def _value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


class Head:
    """The first `n` batches of a RecBole train loader, with the attributes
    `Trainer._train_epoch` reads (`shuffle`, `sampler`)."""

    def __init__(self, loader, n: int) -> None:
        self.loader, self.n = loader, n
        self.shuffle, self.sampler = loader.shuffle, getattr(loader, "sampler", None)

    def __iter__(self):
        return itertools.islice(iter(self.loader), self.n)

    def __len__(self) -> int:
        return min(self.n, len(self.loader))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    # this runs in RecBole's venv, where benchmarks.campaigns.common is not importable: its
    # --smoke is spelled out here, with the same skip line
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="a check: the resume of a stand-in fit (no RecBole needed), then GRU4Rec, "
        "2 batches, a temp workdir where RecBole is installed",
    )
    parser.add_argument("--model", help="RecBole model class, e.g. GRU4Rec (required)")
    parser.add_argument("--workdir", help="cwd for RecBole's saved/ and log/ (required)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batches", type=int, default=0, help="batches per epoch (0 = all)")
    parser.add_argument(
        "--anomaly",
        choices=("shipped", "off"),
        default="shipped",
        help="RecBole 1.2.1 turns autograd anomaly detection on when it imports its models "
        "(sequential_recommender/sine.py); 'off' turns it back off after that import",
    )
    parser.add_argument(
        "--fit",
        action="store_true",
        help="train to early stopping (trainer.fit, stopping_step 10, at most --epochs), "
        "then report the best checkpoint's test metrics",
    )
    parser.add_argument(
        "--deadline",
        type=float,
        default=0.0,
        help="with --fit: Unix time after which no epoch starts (0 = none)",
    )
    parser.add_argument(
        "--resume-file",
        default="",
        help="with --fit: the fit's state at each epoch start goes to this file, and a "
        "fit of the same settings started with it present continues from it exactly",
    )
    parser.add_argument("--set", action="append", default=[], metavar="KEY=JSON")
    args = parser.parse_args()
    if args.smoke:
        print(check_resume(tempfile.mkdtemp(prefix="recbole_resume_")))
        if importlib.util.find_spec("recbole") is None:
            print(
                "smoke: skipped RecBole itself: not installed in this interpreter "
                "(recbole_compare --smoke runs this worker in the RecBole venv)"
            )
            return
        args.model = args.model or "GRU4Rec"
        args.workdir = args.workdir or tempfile.mkdtemp(prefix="recbole_worker_")
        args.batches = args.batches or 2
    elif not (args.model and args.workdir):
        parser.error("--model and --workdir are required")

    import torch

    torch.set_num_threads(args.threads)
    os.makedirs(args.workdir, exist_ok=True)
    if args.resume_file:  # a path given relative to where the worker was started
        args.resume_file = os.path.abspath(args.resume_file)
    os.chdir(args.workdir)

    import recbole
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.utils import get_model, get_trainer, init_seed

    settings = {
        "seed": 0,
        "reproducibility": True,
        "device": "cpu",
        "use_gpu": False,
        "worker": 0,
        "show_progress": False,
        "checkpoint_dir": os.path.join(args.workdir, "saved"),
        "eval_args": {
            "split": {"LS": "valid_and_test"},
            "order": "TO",
            "group_by": "user",
            "mode": "full",
        },
        "MAX_ITEM_LIST_LENGTH": 50,
        "train_neg_sample_args": None,
        "loss_type": "CE",
        "train_batch_size": 2048,
        "eval_batch_size": 4096,
        "learner": "adam",
        "learning_rate": 0.001,
        "weight_decay": 0.0,
        "epochs": args.epochs,
        "metrics": ["Hit", "MRR", "NDCG"],
        "topk": [10, 20],
        "valid_metric": "MRR@10",
        "stopping_step": 10,
    }
    for item in args.set:
        key, _, value = item.partition("=")
        settings[key] = _value(value)

    start = time.perf_counter()
    config = Config(model=args.model, dataset="ml-100k", config_dict=settings)
    init_seed(config["seed"], config["reproducibility"])
    dataset = create_dataset(config)
    train_data, valid_data, test_data = data_preparation(config, dataset)
    init_seed(config["seed"] + config["local_rank"], config["reproducibility"])
    model_class = get_model(config["model"])  # imports every sequential model, sine.py too
    anomaly_as_shipped = torch.is_anomaly_enabled()
    if args.anomaly == "off":
        torch.autograd.set_detect_anomaly(False)
    model = model_class(config, train_data._dataset).to(config["device"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    setup_seconds = time.perf_counter() - start

    if args.fit:
        identity = {k: v for k, v in settings.items() if k != "epochs"} | {"model": args.model}
        fit(trainer, train_data, valid_data, test_data, args, setup_seconds, identity)
        return
    full = len(train_data)
    loader = Head(train_data, args.batches) if 0 < args.batches < full else train_data
    scale = full / len(loader)
    epochs, valids, losses, metrics = [], [], [], {}
    for epoch in range(args.epochs):
        w, c = time.perf_counter(), time.process_time()
        loss = trainer._train_epoch(loader, epoch, show_progress=False)
        epochs.append((time.perf_counter() - w, time.process_time() - c))
        losses.append(float(loss) if not isinstance(loss, tuple) else float(sum(loss)))
        w, c = time.perf_counter(), time.process_time()
        _, metrics = trainer._valid_epoch(valid_data, show_progress=False)
        valids.append((time.perf_counter() - w, time.process_time() - c))

    train_set = train_data._dataset
    out = {
        "model": args.model,
        "recbole": recbole.__version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "anomaly_detection_as_shipped": anomaly_as_shipped,
        "anomaly_detection": torch.is_anomaly_enabled(),
        "train_examples": len(train_set),
        "valid_examples": len(valid_data._dataset),
        "n_items": int(dataset.item_num) - 1,  # RecBole's row 0 is padding
        "n_users": int(dataset.user_num) - 1,
        "batches_per_epoch": full,
        "batches_timed": len(loader),
        "measured_epoch_seconds": [w for w, _ in epochs],
        "measured_epoch_cpu_seconds": [c for _, c in epochs],
        "hyperparameters": {
            k: config[k]
            for k in (
                "embedding_size",
                "hidden_size",
                "num_layers",
                "n_layers",
                "n_heads",
                "inner_size",
                "dropout_prob",
                "dropout_probs",
                "hidden_dropout_prob",
                "attn_dropout_prob",
                "mask_ratio",
                "step",
                "MAX_ITEM_LIST_LENGTH",
                "train_batch_size",
                "eval_batch_size",
                "learner",
                "learning_rate",
                "loss_type",
            )
            if config[k] is not None
        },
        "parameters": sum(p.numel() for p in model.parameters()),
        "setup_seconds": setup_seconds,
        "epoch_seconds": [w * scale for w, _ in epochs],  # per whole epoch
        "epoch_cpu_seconds": [c * scale for _, c in epochs],
        "valid_seconds": [w for w, _ in valids],
        "valid_cpu_seconds": [c for _, c in valids],
        "median_epoch_seconds": statistics.median(w * scale for w, _ in epochs),
        "train_loss": losses,
        "valid_metrics": {k: float(v) for k, v in metrics.items()},
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
    }
    sys.stdout.write(json.dumps(out) + "\n")


def recbole_best_epoch(scores: list[float]) -> int | None:
    """The epoch (from 1) whose checkpoint RecBole tests: its early stopping takes a score
    >= the best so far as the new best (recbole.utils.early_stopping), so the last of
    equal best scores; it stops after `stopping_step` + 1 epochs below it."""
    if not scores:
        return None
    return len(scores) - scores[::-1].index(max(scores))


class _Stop(Exception):
    """Ends trainer.fit before an epoch starts: the deadline passed, or SIGTERM came."""


class Resume:
    """A fit's whole state at an epoch start, so a stopped fit continues exactly.

    RecBole's Trainer saves only its best epoch (no optimizer step count past it, no
    random state), so a fit cut by a session's end could only start over: 20 to 60
    epochs of 330 CPU s for SASRec. This file holds the model, the optimizer, the
    early-stopping counters, the best checkpoint's path, the global random states and
    the train loader's shuffling generator, plus the per-epoch figures reported at the
    end. It is written (atomically) when an epoch is about to start, after the previous
    epoch's validation, early stopping and best-checkpoint save, and read back at the
    same point of the continued fit. `identity` (the RecBole settings but the epoch cap)
    must match: a fit of other settings never continues another's state."""

    def __init__(self, path: str, identity: dict) -> None:
        self.path, self.identity = path, json.loads(json.dumps(identity, default=str))

    def load(self):
        import torch

        if not (self.path and os.path.exists(self.path)):
            return None
        state = torch.load(self.path, weights_only=False)
        if state["identity"] != self.identity:
            raise SystemExit(
                f"{self.path}: the saved fit has other settings than this one "
                f"({state['identity']} against {self.identity}); remove the file to start over"
            )
        return state

    def save(self, trainer, train_data, epoch_idx: int, figures: dict) -> None:
        import random

        import numpy as np
        import torch

        if not self.path:
            return
        state = {
            "identity": self.identity,
            "epoch_idx": epoch_idx,
            "cur_step": trainer.cur_step,
            "best_valid_score": trainer.best_valid_score,
            "best_valid_result": trainer.best_valid_result,
            "saved_model_file": trainer.saved_model_file,
            "model": trainer.model.state_dict(),
            "optimizer": trainer.optimizer.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "numpy_rng": np.random.get_state(),
            "python_rng": random.getstate(),
            "loader_rng": train_data.generator.get_state(),
            "figures": figures,
        }
        torch.save(state, self.path + ".tmp")
        os.replace(self.path + ".tmp", self.path)

    @staticmethod
    def restore(state: dict, trainer, train_data) -> None:
        """Puts the trainer where the saved fit was when its epoch `epoch_idx` began."""
        import random

        import numpy as np
        import torch

        trainer.start_epoch = state["epoch_idx"]
        trainer.model.load_state_dict(state["model"])
        trainer.optimizer.load_state_dict(state["optimizer"])
        trainer.cur_step = state["cur_step"]
        trainer.best_valid_score = state["best_valid_score"]
        trainer.best_valid_result = state["best_valid_result"]
        trainer.saved_model_file = state["saved_model_file"]
        torch.set_rng_state(state["torch_rng"])
        np.random.set_state(state["numpy_rng"])
        random.setstate(state["python_rng"])
        train_data.generator.set_state(state["loader_rng"])

    def done(self) -> None:
        if self.path and os.path.exists(self.path):
            os.remove(self.path)


def fit(
    trainer, train_data, valid_data, test_data, args, setup_seconds: float, identity: dict
) -> None:
    """RecBole's own fit (early stopping on valid MRR@10), then test on its best model;
    also reports each epoch's training CPU seconds, valid MRR@10 and the best epoch.

    With `--deadline T` (Unix time) no epoch starts after T, and SIGTERM does the same at
    the next epoch boundary: the fit ends there and the best checkpoint saved so far is
    tested, reported with `stopped_by` "deadline" / "signal" (else "early stopping" or
    "epoch cap"). Each epoch's valid MRR@10 and CPU seconds go to stderr as it ends.
    With `--resume-file` a stopped (or killed) fit continues from its last epoch start
    (`Resume`); the figures reported cover every epoch, the earlier processes' too."""
    import signal

    import torch

    resume = Resume(args.resume_file, identity)
    saved = resume.load()
    figures = (
        saved["figures"]
        if saved
        else {"train_cpu": [], "valid": [], "fit_cpu": 0.0, "fit_wall": 0.0, "resumed_at": []}
    )
    epochs, valid_scores = figures["train_cpu"], figures["valid"]  # per epoch
    if saved:  # nothing between here and the first epoch draws a random number
        Resume.restore(saved, trainer, train_data)
        figures["resumed_at"].append(saved["epoch_idx"])
        print(f"continuing the saved fit at epoch {saved['epoch_idx'] + 1}", file=sys.stderr)
    train_epoch, valid_epoch = trainer._train_epoch, trainer._valid_epoch
    stop = {"by": None}
    previous_handler = signal.signal(signal.SIGTERM, lambda *_: stop.update(by="signal"))
    w, c = time.perf_counter(), time.process_time()
    spent_before = figures["fit_cpu"], figures["fit_wall"]
    done_before = len(epochs)  # each process trains at least one epoch before a deadline

    def counted(*a, **k):
        epoch_idx = a[1]
        if epochs and not (saved and epoch_idx == saved["epoch_idx"]):
            figures["fit_cpu"] = spent_before[0] + time.process_time() - c
            figures["fit_wall"] = spent_before[1] + time.perf_counter() - w
            resume.save(trainer, train_data, epoch_idx, figures)
        if len(epochs) > done_before and args.deadline and time.time() > args.deadline:
            stop["by"] = stop["by"] or "deadline"
        if stop["by"]:
            raise _Stop(stop["by"])
        started = time.process_time()
        out = train_epoch(*a, **k)
        epochs.append(time.process_time() - started)
        return out

    def scored(*a, **k):
        score, result = valid_epoch(*a, **k)
        valid_scores.append(float(score))
        print(
            f"epoch {len(valid_scores)} valid MRR@10 {float(score):.4f} "
            f"train CPU s {epochs[-1] if epochs else 0:.1f}",
            file=sys.stderr,
            flush=True,
        )
        return score, result

    trainer._train_epoch, trainer._valid_epoch = counted, scored
    try:
        best_valid, best_metrics = trainer.fit(
            train_data, valid_data, saved=True, show_progress=False
        )
        stopped_by = "early stopping" if len(epochs) < args.epochs else "epoch cap"
        resume.done()
    except _Stop as why:
        best_valid, best_metrics = trainer.best_valid_score, trainer.best_valid_result
        stopped_by = str(why)
    finally:
        signal.signal(signal.SIGTERM, previous_handler)
    fit_wall = spent_before[1] + time.perf_counter() - w
    fit_cpu = spent_before[0] + time.process_time() - c
    test = trainer.evaluate(test_data, load_best_model=True, show_progress=False)
    out = {
        "model": args.model,
        "threads": torch.get_num_threads(),
        "anomaly_detection": torch.is_anomaly_enabled(),
        "setup_seconds": setup_seconds,
        "fit_seconds": fit_wall,
        "fit_cpu_seconds": fit_cpu,
        "epochs_run": len(epochs),
        "max_epochs": args.epochs,
        "stopped_by": stopped_by,
        "stopped_early": stopped_by == "early stopping",
        "resumed_at_epochs": [e + 1 for e in figures["resumed_at"]],
        "best_epoch": recbole_best_epoch(valid_scores),
        "valid_mrr@10_per_epoch": valid_scores,
        "train_epoch_cpu_seconds": epochs,
        "best_valid_mrr@10": float(best_valid),
        "valid_metrics": {k: float(v) for k, v in best_metrics.items()},
        "test_metrics": {k: float(v) for k, v in test.items()},
        "train_examples": len(train_data._dataset),
    }
    sys.stdout.write(json.dumps(out) + "\n")


class _StandInLoader:
    """A train loader shuffling from its own generator, as RecBole's does."""

    def __init__(self) -> None:
        self.generator = _torch().Generator().manual_seed(0)
        self._dataset = range(64)
        self.x = _torch().randn(64, 8, generator=_torch().Generator().manual_seed(1))
        self.y = self.x.sum(1, keepdim=True)

    def batches(self):
        order = _torch().randperm(64, generator=self.generator)
        return [order[i : i + 16] for i in range(0, 64, 16)]


class _StandInTrainer:
    """RecBole 1.2.1's Trainer.fit loop in miniature, with the attributes `fit` reaches:
    early stopping on a validation score (stopping_step 2), the best epoch saved to
    `saved_model_file`, dropout from torch's global generator, a numpy draw per batch."""

    def __init__(self, best_file: str, epochs: int) -> None:
        torch = _torch()
        torch.manual_seed(0)
        nn = torch.nn
        self.model = nn.Sequential(nn.Linear(8, 16), nn.Dropout(0.3), nn.Linear(16, 1))
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=0.05)
        self.epochs, self.start_epoch, self.cur_step = epochs, 0, 0
        self.best_valid_score, self.best_valid_result = -float("inf"), None
        self.saved_model_file = best_file

    def _train_epoch(self, data, epoch_idx, show_progress=False):
        import numpy as np

        self.model.train()
        for rows in data.batches():
            weight = 1.0 + np.random.rand()
            loss = weight * ((self.model(data.x[rows]) - data.y[rows]) ** 2).mean()
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
        return float(loss.detach())

    def _score(self, data) -> float:
        self.model.eval()
        with _torch().no_grad():
            return -float(((self.model(data.x) - data.y) ** 2).mean())

    def _valid_epoch(self, data, show_progress=False):
        score = self._score(data)
        return score, {"score": score}

    def fit(self, train_data, valid_data, saved=True, show_progress=False):
        for epoch_idx in range(self.start_epoch, self.epochs):
            self._train_epoch(train_data, epoch_idx, show_progress=show_progress)
            score, result = self._valid_epoch(valid_data, show_progress=show_progress)
            if score >= self.best_valid_score:
                self.best_valid_score, self.best_valid_result, self.cur_step = score, result, 0
                _torch().save(self.model.state_dict(), self.saved_model_file)
            else:
                self.cur_step += 1
                if self.cur_step > 2:
                    break
        return self.best_valid_score, self.best_valid_result

    def evaluate(self, data, load_best_model=True, show_progress=False):
        self.model.load_state_dict(_torch().load(self.saved_model_file))
        return {"score": self._score(data)}


def _torch():
    import torch

    return torch


def check_resume(workdir: str, epochs: int = 40) -> str:
    """`--smoke`'s check of `Resume` without RecBole: a stand-in trainer's fit run once
    straight, then again cut at every epoch (each process's deadline has passed, so it
    trains one epoch and stops) and continued from the resume file by a fresh process
    state (other global seeds). Both must report the same validation scores, epochs,
    stop and test score, and end with equal weights; SystemExit says what differed."""
    import contextlib
    import io

    import numpy as np

    torch = _torch()

    def one_fit(best: str, resume: str = "", deadline: float = 0.0):
        trainer = _StandInTrainer(os.path.join(workdir, best), epochs)
        args = argparse.Namespace(
            model="StandIn", epochs=epochs, deadline=deadline, resume_file=resume
        )
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            fit(trainer, _StandInLoader(), _StandInLoader(), _StandInLoader(), args, 0.0, {})
        return trainer, json.loads(out.getvalue().splitlines()[-1])

    torch.manual_seed(0), np.random.seed(0)
    straight, whole = one_fit("straight.pth")
    resume = os.path.join(workdir, "fit.resume.pth")
    torch.manual_seed(0), np.random.seed(0)
    processes = 0
    while True:
        processes += 1
        cut, part = one_fit(f"cut-{processes}.pth", resume, deadline=1.0)
        if part["stopped_by"] != "deadline":
            break
        torch.manual_seed(processes), np.random.seed(processes)  # a new process's numbers
    keys = ("valid_mrr@10_per_epoch", "epochs_run", "stopped_by", "test_metrics")
    differ = [k for k in keys if part[k] != whole[k]]
    if part["resumed_at_epochs"] != list(range(2, processes + 1)):
        differ.append("resumed_at_epochs")
    if not all(
        torch.equal(a, b)
        for a, b in zip(straight.model.parameters(), cut.model.parameters(), strict=True)
    ):
        differ.append("weights")
    if differ or os.path.exists(resume) or whole["stopped_by"] != "early stopping":
        raise SystemExit(f"smoke: a fit continued at every epoch differs from one fit in {differ}")
    return (
        f"smoke: resume check: a stand-in fit cut at each of its {processes} epochs and "
        f"continued equals one uncut fit (valid scores, early stop at epoch "
        f"{whole['epochs_run']}, test score, weights)"
    )


if __name__ == "__main__":
    main()
