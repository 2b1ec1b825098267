"""The validated configuration of one run, from a YAML file, `--set key=value` and flags.

Keys are run settings (below), `model.<name>` (or a bare name the model's Config has)
for hyperparameters, and `protocol.<name>` for protocol parameters.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
import yaml

from bench.errors import ConfigError
from bench.models.registry import build_config, get_model_class, list_models
from bench.paths import SAFE_NAME, SAFE_NAME_TEXT

ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")


@dataclasses.dataclass(frozen=True)
class Identity:
    """What a setting is to a run's identity. Every RunConfig field carries one, and both
    run ids (`training/run.py`) and leaderboard grouping read them, so the two cannot
    disagree about a setting.

    Roles: `setting` changes what a run computes (in the id, and in a table's
    configuration); `training` matters to gradient training only (in the id; a table
    ignores it for models fitted without epochs); `budget` is a training setting that only
    bounds how long training goes on (`--resume` may raise it); `seed` is in the id, and a
    table puts the seeds of one configuration side by side; `parallel` is how many
    processes train (in the id, one configuration in a table); `placement` is where files
    go, threads and tracking (in neither). `later`: added after runs were published, so
    it stays out of the id at its default and those runs keep their ids.
    """

    role: Literal["setting", "training", "budget", "seed", "parallel", "placement"]
    later: bool = False


SETTING = Identity("setting")
TRAINING = Identity("training")
BUDGET = Identity("budget")
SEED = Identity("seed")
PARALLEL = Identity("parallel")
PLACEMENT = Identity("placement")
TRAINING_LATER = Identity("training", later=True)
BUDGET_LATER = Identity("budget", later=True)


class RunConfig(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid", protected_namespaces=())

    model: Annotated[str, SETTING]
    dataset: Annotated[str, SETTING]
    protocol: Annotated[str | None, SETTING] = None
    target: Annotated[Literal["any", "buy"], SETTING] = "any"
    # numpy takes 0..2**32-1
    seed: Annotated[int, SEED] = pydantic.Field(0, ge=0, le=2**32 - 1)
    max_epochs: Annotated[int, BUDGET] = pydantic.Field(30, ge=1)
    # wall-clock bound on training, in seconds (Lightning's max_time): "HH:MM:SS" and
    # "DD:HH:MM:SS" are read as well; None = no bound, only max_epochs and patience
    max_time: Annotated[int | float | None, BUDGET_LATER] = pydantic.Field(None, gt=0)
    batch_size: Annotated[int, TRAINING] = pydantic.Field(256, ge=1)
    eval_batch_size: Annotated[int, SETTING] = pydantic.Field(1024, ge=1)
    lr: Annotated[float, TRAINING] = pydantic.Field(1e-3, gt=0)
    weight_decay: Annotated[float, TRAINING] = pydantic.Field(0.0, ge=0)
    patience: Annotated[int, BUDGET] = pydantic.Field(5, ge=1)
    # no early stop before this many epochs: a full softmax over tens of thousands of
    # items can sit at its starting loss for several epochs (gru4rec on Taobao, seed 2:
    # stopped by patience 3 at epoch 6, just before the loss began to fall), and patience
    # counted from that plateau ends a run that has not begun to learn
    min_epochs: Annotated[int | None, BUDGET_LATER] = pydantic.Field(None, ge=1)
    monitor: Annotated[str, TRAINING] = "ndcg@10"
    loss: Annotated[Literal["auto", "full", "sampled"], TRAINING] = "auto"
    n_negatives: Annotated[int, TRAINING] = pydantic.Field(8192, ge=1)
    max_len: Annotated[int | None, SETTING] = pydantic.Field(None, ge=1)
    # prefixes: one training example per target (RecBole's way); sequences: whole
    # windows with a loss at every position (SASRec's and BERT4Rec's papers), for the
    # models that allow it: the same targets for a fraction of the encoder work
    training: Annotated[Literal["prefixes", "sequences"], TRAINING_LATER] = "prefixes"
    # batches of similar history length (less padding: 6-20% less CPU per epoch on
    # session data); off by default: on ml-100k (sequences) it peaked early and lower
    # (BENCHMARKS.md "Cheaper full-softmax steps and length buckets")
    length_buckets: Annotated[bool, TRAINING_LATER] = False
    # auto: LazyAdamW with row-sparse item gradients under sampled softmax, else AdamW
    optimizer: Annotated[Literal["auto", "adamw", "lazy_adamw"], TRAINING_LATER] = "auto"
    exclude_history: Annotated[bool, SETTING] = False
    devices: Annotated[int | str, PARALLEL] = 1
    strategy: Annotated[str, PARALLEL] = "auto"
    accelerator: Annotated[str, TRAINING] = "auto"
    precision: Annotated[str | None, TRAINING] = None  # default: bf16-mixed on GPU, 32 on CPU
    # torch threads; None leaves torch's choice
    threads: Annotated[int | None, PLACEMENT] = pydantic.Field(None, ge=1)
    num_workers: Annotated[int, PLACEMENT] = pydantic.Field(0, ge=0)
    limit_train_batches: Annotated[float | int | None, TRAINING] = None
    data_dir: Annotated[str | None, PLACEMENT] = None
    cache_dir: Annotated[str | None, PLACEMENT] = None
    runs_dir: Annotated[str, PLACEMENT] = "runs"
    run_id: Annotated[str | None, PLACEMENT] = None
    resume: Annotated[bool, PLACEMENT] = False
    wandb: Annotated[bool, PLACEMENT] = False
    wandb_group: Annotated[str | None, PLACEMENT] = None
    params: Annotated[dict[str, Any], SETTING] = {}  # model hyperparameters
    protocol_params: Annotated[dict[str, Any], SETTING] = {}
    # e.g. the path and columns of a `custom` file
    adapter_options: Annotated[dict[str, Any], SETTING] = {}

    def updated(self, **changes) -> RunConfig:
        """A copy with `changes`, validated as a new config is (model_copy does not)."""
        return type(self)(**{**self.model_dump(), **changes})

    @pydantic.field_validator("run_id")
    @classmethod
    def _safe_run_id(cls, value: str | None) -> str | None:
        if value is not None and (not SAFE_NAME.fullmatch(value) or ".." in value):
            raise ValueError(f"must be a plain folder name ({SAFE_NAME_TEXT} characters)")
        return value

    @pydantic.field_validator("runs_dir")
    @classmethod
    def _runs_folder(cls, value: str) -> str:
        path = Path(value)
        for place in (path, *path.parents):
            if place.exists() and not place.is_dir():
                raise ValueError(f"{place} is a file, not a folder")
        return value

    @pydantic.field_validator("max_time", mode="before")
    @classmethod
    def _duration(cls, value):
        if isinstance(value, float) and value.is_integer():
            return int(value)  # one spelling per budget, so 120 and 120.0 are one run id
        if not isinstance(value, str):
            return value
        parts = value.strip().split(":")
        if len(parts) > 4 or not all(
            p.strip().replace(".", "", len(parts) == 1).isdigit() for p in parts
        ):
            raise ValueError("must be seconds (120), HH:MM:SS (00:02:00) or DD:HH:MM:SS")
        if len(parts) == 1:
            return cls._duration(float(parts[0]))
        units = (1, 60, 3600, 86400)
        return sum(int(p) * u for p, u in zip(reversed(parts), units, strict=False))

    @pydantic.field_validator("min_epochs")
    @classmethod
    def _within_max_epochs(cls, value: int | None, info: pydantic.ValidationInfo):
        top = info.data.get("max_epochs")  # validated before it (field order)
        if value is not None and top is not None and value > top:
            raise ValueError(f"must not exceed max_epochs ({top})")
        return value

    @pydantic.field_validator("accelerator")
    @classmethod
    def _known_accelerator(cls, value: str) -> str:
        if value not in ACCELERATORS:
            raise ValueError(f"must be one of {', '.join(ACCELERATORS)}")
        return value

    @pydantic.field_validator("devices")
    @classmethod
    def _device_count(cls, value: int | str) -> int | str:
        text = str(value).strip()
        if text == "auto" or text == "-1":
            return text if isinstance(value, str) else value
        if text.isdigit() and int(text) >= 1:
            return int(text)
        if all(part.strip().isdigit() for part in text.split(",")) and "," in text:
            return text  # a list of device indices, e.g. "0,1"
        raise ValueError("must be a number of devices (1, 2, ...), 'auto', or indices like 0,1")

    @pydantic.field_validator("monitor")
    @classmethod
    def _known_metric(cls, value: str) -> str:
        name, _, k = value.partition("@")
        if name not in {"hr", "mrr", "ndcg"} or not k.isdigit():
            raise ValueError("must look like ndcg@10, hr@20 or mrr@20")
        return value


# What a training mode brings where the settings leave it out. A batch of 64 windows holds
# up to 3,200 targets where one of 256 prefixes holds 256, and an epoch takes a tenth of
# the optimiser steps, so sequences train with the recipe measured on ml-100k (batch 64,
# lr 2e-3, patience 10, at most 150 epochs; BENCHMARKS.md "Training on whole sequences").
# Prefixes keep RunConfig's own defaults, so no published run changes its id.
MODE_DEFAULTS: dict[str, dict[str, Any]] = {
    "prefixes": {},
    "sequences": {"batch_size": 64, "lr": 2e-3, "patience": 10, "max_epochs": 150},
}


def _with_mode_defaults(merged: dict[str, Any], shared_training: bool) -> dict[str, Any]:
    """`merged` with the training mode filled in (the model's `default_training` when none
    is given) and the defaults of that mode for the settings it leaves out. With
    `shared_training` a mode given for many models at once (automl) means, for a model
    that reads whole histories, prefixes (`training_for`)."""
    try:
        model_cls = get_model_class(merged.get("model"))
    except ConfigError:
        return merged  # an unknown model: check_settings names it
    training = merged.get("training") or getattr(model_cls, "default_training", "prefixes")
    if shared_training and getattr(model_cls, "trains_on_sequences", False) is False:
        training = "prefixes"
    return {**MODE_DEFAULTS.get(training, {}), **merged, "training": training}


def training_for(model: str, wanted: str) -> str:
    """`wanted`, or prefixes for a model that reads each history as a whole: what a
    setting shared by many models (a campaign's, an automl's) means for each of them."""
    able = getattr(get_model_class(model), "trains_on_sequences", False)
    return wanted if able else "prefixes"


RUN_KEYS = set(RunConfig.model_fields) - {"params", "protocol_params", "adapter_options"}


def identity_roles(config_class: type[pydantic.BaseModel]) -> dict[str, Identity]:
    """Each field's Identity. A field without one is refused here, at import, so a new
    setting cannot slip into run ids or out of leaderboard grouping unnoticed."""
    roles = {}
    for name, field in config_class.model_fields.items():
        found = [m for m in field.metadata if isinstance(m, Identity)]
        if len(found) != 1:
            raise TypeError(
                f"{config_class.__name__}.{name} needs one identity role "
                "(Annotated[type, SETTING | TRAINING | BUDGET | SEED | PARALLEL | PLACEMENT]); "
                "a field added after runs were published takes a `later` one"
            )
        roles[name] = found[0]
    return roles


IDENTITY = identity_roles(RunConfig)


def keys_with(*roles: str) -> frozenset[str]:
    """The RunConfig fields whose identity role is one of `roles`."""
    return frozenset(name for name, identity in IDENTITY.items() if identity.role in roles)


# what run ids leave out, what `--resume` may raise, and the later settings (with the
# defaults at which they stay out of the id)
NOT_IN_ID = keys_with("placement")
BUDGET_KEYS = keys_with("budget")
LATER_DEFAULTS = {
    name: RunConfig.model_fields[name].default for name, i in IDENTITY.items() if i.later
}


def _error_from(err: pydantic.ValidationError, flags: set[str]) -> ConfigError:
    """The first problem, naming the flag that gave the value (or --set key)."""
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"])
    if first["type"] == "extra_forbidden":
        return ConfigError(
            f"unknown key {key!r}",
            option="--config/--set",
            hint=f"run settings are: {', '.join(sorted(RUN_KEYS))}; model hyperparameters "
            "go under model.<name>, protocol ones under protocol.<name>",
        )
    option = f"--{key.replace('_', '-')}" if key in flags else f"--set {key}"
    value = first.get("input")
    return ConfigError(
        f"bad value for {key}: {first['msg'].removeprefix('Value error, ')} (got {value!r})",
        option=option,
        hint=f"leave it out for the default, {RunConfig.model_fields[key].default!r}"
        if RunConfig.model_fields.get(key) and RunConfig.model_fields[key].default is not None
        else "see `bench run --help`",
    )


def _check_hardware(config: RunConfig) -> None:
    """Asking for a device this machine lacks fails here, before any data is read."""
    import torch

    if config.accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"accelerator {config.accelerator!r} asked for, but this machine has no CUDA GPU",
            option="--accelerator",
            hint="use --accelerator cpu (or auto, which takes a GPU when there is one)",
        )
    if config.accelerator == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(
            "accelerator 'mps' asked for, but this machine has no Apple GPU",
            option="--accelerator",
            hint="use --accelerator cpu (or auto)",
        )


def load_config_file(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise ConfigError(
            "config file not found",
            file=path,
            option="--config",
            hint="check the path, or give the settings with --set key=value",
        )
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        raise ConfigError(
            f"not valid YAML: {getattr(err, 'problem', err)}",
            file=path,
            line=mark.line + 1 if mark else None,
            hint="write one `key: value` per line (e.g. `lr: 0.002`), lists as [a, b]",
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(
            "a config file holds a mapping of key: value",
            file=path,
            hint="write one `key: value` per line, e.g. `max_epochs: 50`",
        )
    return data


def resolve(
    file_values: dict,
    assignments: dict,
    flags: dict,
    *,
    check: bool = True,
    shared_training: bool = False,
) -> RunConfig:
    """Merge file < --set < explicit flags < the model's training mode and that mode's
    defaults (`MODE_DEFAULTS`, for what is left out), route keys to run / model / protocol,
    validate (the values, and with `check` the settings against the model:
    `check_settings`). `shared_training`: settings given to many models at once, where
    training=sequences holds for the models that allow it."""
    merged: dict[str, Any] = {}
    params: dict[str, Any] = dict(file_values.pop("params", None) or {})
    protocol_params: dict[str, Any] = dict(file_values.pop("protocol_params", None) or {})
    adapter_options: dict[str, Any] = dict(file_values.pop("adapter_options", None) or {})
    adapter_options.update(flags.pop("adapter_options", None) or {})
    for values in (file_values, assignments):
        for key, value in values.items():
            if key.startswith("model."):
                params[key[6:]] = value
            elif key.startswith("protocol."):
                protocol_params[key[9:]] = value
            elif key in RUN_KEYS:
                merged[key] = value
            else:
                params[key] = value  # a bare model hyperparameter; checked below
    merged.update({k: v for k, v in flags.items() if v is not None})
    merged = _with_mode_defaults(merged, shared_training)
    try:
        config = RunConfig(
            **merged,
            params=params,
            protocol_params=protocol_params,
            adapter_options=adapter_options,
        )
    except pydantic.ValidationError as err:
        raise _error_from(err, {k for k, v in flags.items() if v is not None}) from None
    if check:
        check_settings(config)
    return config


def check_settings(config: RunConfig) -> None:
    """What a RunConfig cannot check alone: the hardware it asks for, the model's name and
    hyperparameters, and whether the model can train on whole sequences."""
    _check_hardware(config)
    model_cls = get_model_class(config.model)
    params = config.params
    known = {f.name for f in dataclasses.fields(model_cls.Config)}
    unknown = sorted(set(params) - known)
    if unknown:
        raise ConfigError(
            f"unknown key(s) {', '.join(unknown)}: neither a run setting nor a "
            f"hyperparameter of {config.model}",
            option="--set",
            hint=f"{config.model} takes: {', '.join(sorted(known))}; run settings: "
            f"{', '.join(sorted(RUN_KEYS))}",
        )
    build_config(config.model, params)  # validates the values
    if config.training == "sequences" and not getattr(model_cls, "trains_on_sequences", False):
        able = ", ".join(
            n for n in list_models() if getattr(get_model_class(n), "trains_on_sequences", False)
        )
        raise ConfigError(
            f"{config.model} reads each history as a whole, so it trains on prefixes only",
            option="training",
            hint=f"training=sequences works for: {able}",
        )
