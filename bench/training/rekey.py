"""`bench rekey`: move runs made before run ids held every hyperparameter to their ids now.

Until then a run id hashed only the hyperparameters given with `--set`, so a changed
model default kept the id: a campaign skipped the new default as done, or resumed a
checkpoint made with the old one. A finished run recorded the hyperparameters it was
built with (result.json), so its identity can be completed exactly and its folder and
results-store row renamed to the id the same settings get today. An unfinished run did
not record them: it is left as it is (a run of that configuration starts afresh).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from bench.errors import ConfigError
from bench.models.registry import get_model_class
from bench.results import ResultsStore, results_table
from bench.training.run import IDENTITY_FILE, LOCKS, hold_run, run_id_of


@dataclass
class Rekeyed:
    moved: list[tuple[str, str]] = field(default_factory=list)  # (old id, new id)
    rewritten: list[str] = field(default_factory=list)  # identity completed, name kept
    current: int = 0  # folders whose identity was complete already
    left: list[tuple[str, str]] = field(default_factory=list)  # (folder, why)
    rows: int = 0  # results-store rows renamed


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _names_every_hyperparameter(found: dict) -> bool:
    """Whether an identity names every hyperparameter its model has today."""
    try:
        names = {f.name for f in dataclasses.fields(get_model_class(found["model"]).Config)}
    except ConfigError:  # a model no longer registered
        return False
    return names <= set(found.get("params") or {})


def _with_hyperparameters(found: dict, hyperparameters: dict) -> dict:
    return json.loads(json.dumps({**found, "params": hyperparameters}, sort_keys=True, default=str))


def rekey(runs_dir: str | Path, results: str | Path | None = None) -> Rekeyed:
    """Complete the identity of every finished run under `runs_dir` (sweep folders
    included) and rename the folders named by their old id, and their rows in `results`.
    Running it again changes nothing."""
    root = Path(runs_dir).resolve()
    if not root.is_dir():
        raise ConfigError(f"{root} is not a folder of runs", option="--runs-dir")
    store = ResultsStore(results) if results else None
    report = Rekeyed()
    for identity_file in sorted(root.rglob(IDENTITY_FILE)):
        folder = identity_file.parent
        if LOCKS in folder.relative_to(root).parts:
            continue
        found = _read(identity_file)
        result = _read(folder / "result.json")
        if found is None or "model" not in found:
            report.left.append((str(folder), "its identity.json cannot be read"))
            continue
        if result is None or not isinstance(result.get("hyperparameters"), dict):
            if _names_every_hyperparameter(found):
                report.current += 1
            elif result is None:
                report.left.append(
                    (str(folder), "unfinished: the hyperparameters it was built with are unknown")
                )
            else:
                report.left.append((str(folder), "its result.json records no hyperparameters"))
            continue
        wanted = _with_hyperparameters(found, result["hyperparameters"])
        if wanted == found:
            report.current += 1
            continue
        old_id, new_id = folder.name, folder.name
        if run_id_of(found) == folder.name:  # named by its id (not a sweep's trial-N)
            new_id = run_id_of(wanted)
        target = folder.with_name(new_id)
        if target != folder and target.exists():
            report.left.append((str(folder), f"{new_id} exists already"))
            continue
        with hold_run(folder.parent, old_id):  # refused while a process trains it
            identity_file.write_text(json.dumps(wanted, indent=2, sort_keys=True))
            if target != folder:
                result = result | {"run_id": new_id, "run_dir": str(target)}
                (folder / "result.json").write_text(json.dumps(result, indent=2, default=str))
                folder.rename(target)
        if target == folder:
            report.rewritten.append(str(folder))
            continue
        report.moved.append((old_id, new_id))
        if store is not None:
            report.rows += _rename_rows(store, old_id, new_id, str(target))
    return report


def _rename_rows(store: ResultsStore, old_id: str, new_id: str, run_dir: str) -> int:
    """Rename the run rows of `old_id`; their stored result.json follows."""
    table = results_table
    with store.engine.begin() as conn:
        rows = conn.execute(
            sa.select(table.c.id, table.c.result).where(
                (table.c.run_id == old_id) & (table.c.kind == "run")
            )
        ).all()
        for row_id, text in rows:
            result = json.loads(text) | {"run_id": new_id, "run_dir": run_dir}
            conn.execute(
                table.update()
                .where(table.c.id == row_id)
                .values(run_id=new_id, result=json.dumps(result, default=str))
            )
    return len(rows)
