"""Export a run's scorer (encoder + tied item table) as a self-contained program.

torch.export traces `Scorer` into an ExportedProgram (saved as a `.pt2` file, loaded
with `torch.export.load`, no bench code or Python model classes needed) with a dynamic
batch size and history width (recurrent cells trace at a fixed width, so for them the
program pads every history to max_len itself); if torch.export refuses a model (data-dependent shapes,
as the graph models' per-history graphs), ONNX via the dynamo exporter is tried when
the `onnx` package is installed. The file goes into the run folder (`export/`) unless
another path is given, like everything else a run writes.

Usage: `python -m bench.export --run runs/<id> [--out scorer.pt2]`.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from bench.errors import BenchError
from bench.training.predict import Recommender

INPUTS = ("items", "behaviors", "categories", "gaps", "lengths")


class Scorer(nn.Module):
    """(items, behaviors, categories, gaps (B, L) long, lengths (B,) long) -> scores
    (B, n_items + 1) of every item; column 0 is padding and never a prediction."""

    def __init__(self, model: nn.Module, pad_to: int | None = None) -> None:
        super().__init__()
        self.model = model
        self.pad_to = pad_to

    def forward(self, items, behaviors, categories, gaps, lengths) -> torch.Tensor:
        batch = {
            "items": items,
            "behaviors": behaviors,
            "categories": categories,
            "gaps": gaps,
            "lengths": lengths,
        }
        if self.pad_to is not None:  # histories are left-aligned: pads after the last event
            batch = {
                k: F.pad(v, (0, self.pad_to - v.size(1))) if v.dim() == 2 else v
                for k, v in batch.items()
            }
        return self.model.encode(batch) @ self.model.item_table().T


def example_inputs(rec: Recommender) -> tuple[torch.Tensor, ...]:
    """Two histories of different lengths (sizes 1 would be specialised as constants)."""
    items = [rec.raw[i] for i in range(1, min(rec.n_items, 3) + 1)]
    batch = rec.batch([rec.resolve(items), rec.resolve(items[:2])])
    return tuple(batch[name] for name in INPUTS)


def export_program(rec: Recommender) -> torch.export.ExportedProgram:
    """torch.export of the run's scorer, dynamic in batch size and history width."""
    if not rec.model.neural:
        raise BenchError(
            f"{rec.name} is not a neural model: it has no encoder and item table to export",
            option="--run",
            hint="export a neural run (sasrec, gru4rec, ...); kNN and floors score from data",
        )
    batch = torch.export.Dim("batch", min=1, max=1 << 16)
    width = torch.export.Dim("width", min=1, max=rec.max_len)
    per_event = {0: batch, 1: width}
    shapes = {name: per_event for name in INPUTS[:-1]} | {"lengths": {0: batch}}
    with torch.no_grad(), warnings.catch_warnings():
        # nn.RNN re-assigns its flat weight list while traced; the program still holds them
        warnings.filterwarnings("ignore", message=".*_flat_weights.*")
        try:
            return torch.export.export(
                Scorer(rec.model).eval(), example_inputs(rec), dynamic_shapes=shapes, strict=False
            )
        except torch._dynamo.exc.UserError:
            # The recurrent cells are traced at a fixed width: pad every history to
            # max_len inside the program, so callers still pass any width.
            scorer = Scorer(rec.model, pad_to=rec.max_len).eval()
            return torch.export.export(
                scorer, example_inputs(rec), dynamic_shapes=shapes, strict=False
            )


def export_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the run's scorer to `out` (default `<run>/export/scorer.pt2`, or `.onnx`
    when only ONNX works) and return the path."""
    rec = Recommender(run_dir)
    target = Path(out) if out else rec.run_dir / "export" / "scorer.pt2"
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        program = export_program(rec)
    except BenchError:
        raise
    except Exception as err:  # torch.export could not trace this model
        return _export_onnx(rec, target.with_suffix(".onnx"), err)
    torch.export.save(program, target)
    return target


def _export_onnx(rec: Recommender, target: Path, cause: Exception) -> Path:
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise BenchError(
            f"torch.export cannot trace {rec.name}: {type(cause).__name__}: "
            f"{str(cause).splitlines()[0][:200]}",
            option="--run",
            hint="install the onnx package to try the ONNX exporter instead",
        ) from None
    with torch.no_grad():
        torch.onnx.export(
            Scorer(rec.model).eval(),
            example_inputs(rec),
            str(target),
            input_names=list(INPUTS),
            output_names=["scores"],
            dynamic_axes={n: {0: "batch", 1: "width"} for n in INPUTS[:-1]}
            | {"lengths": {0: "batch"}, "scores": {0: "batch"}},
        )
    return target


def load_scorer(path: str | Path):
    """The exported scorer as a callable module (inputs as `Scorer.forward`)."""
    return torch.export.load(str(path)).module()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="a finished run folder")
    parser.add_argument("--out", help="output file (default <run>/export/scorer.pt2)")
    args = parser.parse_args()
    try:
        print(export_run(args.run, args.out))
    except BenchError as err:
        raise SystemExit(f"error: {err.render()}") from None


if __name__ == "__main__":
    main()
