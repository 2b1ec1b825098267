"""bench: leakage-safe benchmarking and AutoML for user-behaviour sequence prediction."""

from __future__ import annotations

TYPE_CHECKING = False  # typing itself costs more than the rest of `import bench`
if TYPE_CHECKING:
    from os import PathLike

    from bench.training.predict import Recommender

__version__ = "0.1.0"
__all__ = ["__version__", "load_run"]


def load_run(run_dir: str | PathLike[str]) -> Recommender:
    """A finished run loaded once, for repeated queries:
    `bench.load_run("runs/<run_id>").recommend(["242", "302"], k=10)`, `.recommend_many`
    for many histories in batches, `.recommend_file` for a file of them.

    Torch and the model code load here, not at `import bench` (the CLI imports bench)."""
    from bench.training.predict import Recommender

    return Recommender(run_dir)
