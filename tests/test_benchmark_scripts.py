"""Every campaign script under benchmarks/campaigns/ runs in its smoke mode (tiny sizes,
seconds), so none rots unnoticed: the list is what the folder holds, a new script cannot
escape. The benchmarks and the tests stay apart: neither imports the other, and the
benchmark modules import each other without a cycle.

Smoke runs are checks that the code works, never timings: `pytest benchmarks
--benchmark-only` is where figures come from, and CI does not run it.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CAMPAIGNS = ROOT / "benchmarks" / "campaigns"
HELPERS = {"__init__", "common"}  # modules of the folder that are not scripts
SCRIPTS = sorted(p.stem for p in CAMPAIGNS.glob("*.py") if p.stem not in HELPERS)
SKIPPED, SKIPPED_ALL = "smoke: skipped", "smoke: skipped all:"  # common.py's lines


def test_the_folder_holds_the_scripts():
    assert {"campaign", "campaign_archive", "model_speed", "recbole_compare"} <= set(SCRIPTS)


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS)
def test_script_runs_in_smoke_mode(script, tmp_path):
    env = dict(os.environ, TMPDIR=str(tmp_path), OUT=str(tmp_path), WANDB_MODE="offline")
    if env.get("BENCH_DATA_DIR"):  # the scripts run in tmp_path: a relative folder would move
        env["BENCH_DATA_DIR"] = str(Path(env["BENCH_DATA_DIR"]).resolve())
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, "-m", f"benchmarks.campaigns.{script}", "--smoke"],
        cwd=tmp_path,  # anything a script writes by default lands in the test's folder
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "Traceback" not in out, out[-4000:]
    whole = [line for line in proc.stdout.splitlines() if line.startswith(SKIPPED_ALL)]
    if whole:
        pytest.skip(whole[0].removeprefix(SKIPPED_ALL).strip())
    assert proc.stdout.strip(), "a smoke run prints what it measured"
    for line in proc.stdout.splitlines():  # parts left out on this machine, said why
        if line.startswith(SKIPPED):
            print(line)


# ------------------------------------------------------------------ imports


def _imports(path: Path) -> set[str]:
    """Every module name an import statement of `path` names, at any level."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


def _within(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def _modules(folder: str) -> dict[str, Path]:
    return {
        ".".join(p.relative_to(ROOT).with_suffix("").parts): p
        for p in sorted((ROOT / folder).rglob("*.py"))
    }


def test_tests_import_no_benchmark_and_benchmarks_import_no_test():
    wrong = [
        f"{name} imports {target}"
        for folder, other in (("tests", "benchmarks"), ("benchmarks", "tests"))
        for name, path in _modules(folder).items()
        for target in _imports(path)
        if _within(target, other)
    ]
    assert not wrong, wrong


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of `edges` (module -> modules it imports), or None."""
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(name: str, path: list[str]) -> list[str] | None:
        state[name] = 1
        for target in sorted(edges.get(name, ())):
            if state.get(target) == 1:
                return [*path, name, target]
            if target not in state and (cycle := visit(target, [*path, name])):
                return cycle
        state[name] = 2
        return None

    for name in sorted(edges):
        if name not in state and (cycle := visit(name, [])):
            return cycle
    return None


def test_find_cycle_finds_the_one_that_was_there():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_benchmark_modules_import_each_other_without_a_cycle():
    modules = _modules("benchmarks")
    edges = {
        name: {m for m in modules if m != name and m in _imports(path)}
        for name, path in modules.items()
    }
    assert any(edges.values())  # the walk sees the imports (recbole_accuracy -> recbole_compare)
    assert (cycle := find_cycle(edges)) is None, " -> ".join(cycle)
