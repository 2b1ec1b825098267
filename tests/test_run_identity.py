"""Run identity is declared once, on RunConfig's fields, and read by run ids and
leaderboard grouping alike. Run ids are pinned: they changed once, when they came to hold
every hyperparameter (defaults included), and `bench rekey` maps each earlier id to its
id now (tests/test_rekey.py)."""

from __future__ import annotations

import dataclasses
from typing import Annotated

import pydantic
import pytest

from bench.leaderboard_tables import _config_key
from bench.models.registry import build_config
from bench.training.config import IDENTITY, SETTING, RunConfig, identity_roles
from bench.training.run import group_for, identity, run_id_for, run_id_of

# (settings, protocol, protocol hash, data fingerprint) -> (run id, W&B group, run id before
# hyperparameter defaults joined the id): results stores are keyed by these
GOLDEN = [
    (
        {"model": "pop", "dataset": "ml-100k"},
        ("user-loo",),
        "pop-ml-100k-user-loo-s0-49ffcf83",
        "pop-ml-100k-user-loo-87ce04e1",
        "pop-ml-100k-user-loo-s0-49ffcf83",  # pop has no hyperparameters: its id stays
    ),
    (
        {
            "model": "gru4rec",
            "dataset": "ml-100k",
            "seed": 2,
            "training": "sequences",
            "max_epochs": 150,
            "patience": 10,
            "batch_size": 64,
            "lr": 0.002,
            "threads": 1,
            "runs_dir": "runs/cite",
            "wandb": False,
        },
        ("user-loo", "0123456789abcdef", "fedcba9876543210"),
        "gru4rec-ml-100k-user-loo-s2-bfec9dce",
        "gru4rec-ml-100k-user-loo-8cb1f7ea",
        "gru4rec-ml-100k-user-loo-s2-955e6dd3",
    ),
    (
        {
            "model": "sasrec",
            "dataset": "taobao",
            "max_time": 120,
            "devices": 2,
            "strategy": "ddp",
            "protocol_params": {"min_item_support": 1},
            "params": {"embedding_dim": 32},
            "optimizer": "adamw",
            "length_buckets": True,
        },
        ("user-time", "h", "d"),
        "sasrec-taobao-user-time-s0-020db6bd",
        "sasrec-taobao-user-time-89d1cb6b",
        "sasrec-taobao-user-time-s0-5a071ed3",
    ),
    (
        {
            "model": "narm",
            "dataset": "diginetica",
            "cache_dir": "/x",
            "data_dir": "/y",
            "num_workers": 3,
            "wandb_group": "g",
            "resume": True,
            "run_id": "abc",
        },
        ("session-srgnn", "hash"),
        "narm-diginetica-session-srgnn-s0-1cab3d70",
        "narm-diginetica-session-srgnn-61932a0a",
        "narm-diginetica-session-srgnn-s0-6422ff45",
    ),
]


@pytest.mark.parametrize(("settings", "where", "run_id", "group", "before"), GOLDEN)
def test_run_ids_are_pinned(settings, where, run_id, group, before):
    config = RunConfig(**settings)
    assert run_id_for(config, *where) == run_id
    assert group_for(config, *where) == group
    # the id the same settings had when only the --set hyperparameters counted
    assert run_id_of({**identity(config, *where), "params": config.params}) == before


def test_a_changed_model_default_is_another_run(monkeypatch):
    """Giving a hyperparameter its default explicitly is the same run; changing the
    default is not (sasrec's dropout 0.5 -> 0.2 once kept its id, and a campaign resumed a
    0.5 checkpoint as a 0.2 run)."""
    import bench.training.run as run

    base = RunConfig(model="sasrec", dataset="ml-100k")
    default = build_config("sasrec").dropout
    explicit = RunConfig(model="sasrec", dataset="ml-100k", params={"dropout": default})
    assert run_id_for(base, "user-loo") == run_id_for(explicit, "user-loo")
    assert identity(base, "user-loo")["params"]["dropout"] == default

    real = run.build_config

    def new_default(name, overrides=None):
        built = real(name, overrides)
        return built if "dropout" in (overrides or {}) else dataclasses.replace(built, dropout=0.7)

    before = run_id_for(base, "user-loo")
    monkeypatch.setattr(run, "build_config", new_default)
    assert run_id_for(base, "user-loo") != before
    assert run_id_for(explicit, "user-loo") == before  # an explicit value keeps its run


def test_auto_on_a_gpu_machine_is_another_run_than_on_a_cpu(monkeypatch):
    """`--accelerator auto` trains in 32 bits on a CPU and in bf16 on a GPU: one id for
    both let a CPU campaign skip (or resume) a GPU run as its own. The id holds what the
    machine resolves; a CPU run keeps the id it always had, whatever it was spelled."""
    import torch

    where = ("user-loo", "h", "d")
    auto = RunConfig(model="gru4rec", dataset="ml-100k")
    on_cpu = run_id_for(auto, *where)
    assert on_cpu == run_id_for(
        RunConfig(model="gru4rec", dataset="ml-100k", accelerator="cpu"), *where
    )
    assert on_cpu == run_id_for(
        RunConfig(model="gru4rec", dataset="ml-100k", precision="32-true"), *where
    )
    cpu_bf16 = RunConfig(model="gru4rec", dataset="ml-100k", precision="bf16-mixed")
    assert run_id_for(cpu_bf16, *where) != on_cpu

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    on_gpu = run_id_for(auto, *where)
    assert on_gpu != on_cpu
    assert identity(auto, *where)["accelerator"] == "gpu"
    assert identity(auto, *where)["precision"] == "bf16-mixed"
    assert on_gpu == run_id_for(
        RunConfig(model="gru4rec", dataset="ml-100k", accelerator="gpu"), *where
    )
    fp32 = RunConfig(model="gru4rec", dataset="ml-100k", precision="32-true")
    assert run_id_for(fp32, *where) not in (on_gpu, on_cpu)
    assert (
        run_id_for(RunConfig(model="gru4rec", dataset="ml-100k", accelerator="cpu"), *where)
        == on_cpu
    )


def test_a_field_without_an_identity_role_is_refused():
    class Grown(RunConfig):
        new_knob: int = 3

    with pytest.raises(TypeError, match=r"Grown\.new_knob needs one identity role"):
        identity_roles(Grown)

    class Declared(RunConfig):
        new_knob: Annotated[int, SETTING] = 3

    assert identity_roles(Declared)["new_knob"] is SETTING


def test_every_field_has_a_role():
    assert set(IDENTITY) == set(RunConfig.model_fields)


def _result(config: RunConfig, epochs: int = 5) -> dict:
    """The parts of a result row the leaderboard groups on."""
    return {"run_config": config.model_dump(), "hyperparameters": {}, "epochs": epochs}


# one changed value per role: (field, value)
CHANGES = {
    "setting": ("eval_batch_size", 7),
    "training": ("lr", 0.01),
    "budget": ("max_epochs", 3),
    "seed": ("seed", 4),
    "parallel": ("devices", 2),
    "placement": ("threads", 3),
}


@pytest.mark.parametrize("role", sorted(CHANGES))
def test_run_ids_and_tables_read_the_same_roles(role):
    """What each role means, seen from both readers: whether a change of the setting
    makes another run id, and whether it makes another configuration in a table (for a
    trained model and for one fitted without epochs)."""
    field, value = CHANGES[role]
    assert IDENTITY[field].role == role
    base = RunConfig(model="gru4rec", dataset="ml-100k")
    changed = RunConfig(**{**base.model_dump(), field: value})
    new_id = run_id_for(base, "user-loo") != run_id_for(changed, "user-loo")
    new_row = _config_key(_result(base)) != _config_key(_result(changed))
    new_fitted_row = _config_key(_result(base, 0)) != _config_key(_result(changed, 0))
    expected = {
        "setting": (True, True, True),
        "training": (True, True, False),
        "budget": (True, True, False),
        "seed": (True, False, False),
        "parallel": (True, False, False),
        "placement": (False, False, False),
    }[role]
    assert (new_id, new_row, new_fitted_row) == expected


def test_later_settings_stay_out_of_the_id_at_their_default():
    later = [name for name, i in IDENTITY.items() if i.later]
    assert set(later) == {"training", "optimizer", "max_time", "length_buckets", "min_epochs"}
    payload = identity(RunConfig(model="gru4rec", dataset="ml-100k"), "user-loo")
    assert not set(later) & set(payload)
    moved = identity(RunConfig(model="gru4rec", dataset="ml-100k", max_time=60), "user-loo")
    assert moved["max_time"] == 60
    waited = identity(RunConfig(model="gru4rec", dataset="ml-100k", min_epochs=10), "user-loo")
    assert waited["min_epochs"] == 10


def test_identity_roles_reject_a_field_with_two_roles():
    class Twice(pydantic.BaseModel):
        knob: Annotated[int, SETTING, SETTING] = 1

    with pytest.raises(TypeError, match="knob needs one identity role"):
        identity_roles(Twice)


@pytest.mark.parametrize(
    ("settings", "strict"),
    [
        ({"accelerator": "gpu", "precision": "32-true"}, True),
        ({"precision": "32-true"}, True),  # auto on a GPU machine, asked for 32 bits
        ({"accelerator": "gpu"}, False),  # bf16-mixed keeps torch's defaults
        ({"accelerator": "cpu", "precision": "32-true"}, False),
    ],
)
def test_32_bits_on_a_gpu_is_ieee_float32_not_tf32(monkeypatch, settings, strict):
    """torch lets cuDNN run float32 GRU/LSTM products in TF32 by default: a 32-bit GPU row
    would not be the CPU's arithmetic that it is compared with. A 32-bit GPU run turns it
    off and says so in its result; other runs leave torch's settings as they are."""
    import torch

    from bench.training.run import _compute_used, strict_fp32_on_gpu

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    before = cudnn.allow_tf32, matmul.allow_tf32
    cudnn.allow_tf32 = matmul.allow_tf32 = True
    try:
        config = RunConfig(model="gru4rec", dataset="ml-100k", **settings)
        strict_fp32_on_gpu(config)
        assert cudnn.allow_tf32 is not strict
        assert matmul.allow_tf32 is not strict
        assert (_compute_used(config, neural=True).get("tf32") is False) == strict
    finally:
        cudnn.allow_tf32, matmul.allow_tf32 = before
