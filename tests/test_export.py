"""Export: a run's scorer through torch.export ranks exactly as the checkpoint does."""

import pytest
import torch

from bench.errors import BenchError
from bench.evaluation import chunked_topk
from bench.export import INPUTS, export_run, load_scorer
from bench.training.predict import load_run, stable_topk
from tests.planted_runs import train, write_planted

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return write_planted(tmp_path_factory.mktemp("export"))


@pytest.mark.parametrize("model", ["sasrec", "gru4rec", "stamp"])
def test_exported_scorer_ranks_exactly_as_the_checkpoint(root, tmp_path, model):
    run_dir = train(root, model, max_len=12)
    path = export_run(run_dir, tmp_path / "scorer.pt2")
    assert path.suffix == ".pt2" and path.stat().st_size > 0
    scorer = load_scorer(path)  # the program alone: no bench model class is built
    checkpoint, _, _, data, _, _ = load_run(run_dir, with_data=True)
    batches = iter(data.test_dataloader())
    compared = 0
    for batch in (next(batches), next(batches)):  # 256 test histories, then the rest
        with torch.no_grad():
            want_scores, want = chunked_topk(checkpoint.encode(batch), checkpoint.item_table(), 10)
            scores = scorer(*(batch[name] for name in INPUTS))
        scores[:, 0] = -torch.inf
        got_scores, got = stable_topk(scores, 10)
        assert torch.equal(got, want)
        assert torch.allclose(got_scores, want_scores, rtol=1e-5, atol=1e-5)
        compared += batch["items"].size(0)
    assert compared > 300  # two batch sizes and several history widths went through


def test_non_neural_runs_are_refused_with_a_reason(root, tmp_path):
    run_dir = train(root, "sknn")
    with pytest.raises(BenchError, match="not a neural model"):
        export_run(run_dir, tmp_path / "scorer.pt2")
