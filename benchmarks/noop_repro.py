"""Time a no-op `dvc repro` of the pipeline against `dvc status` and DVC's bare start.

With everything up to date, `dvc repro` still starts Python, imports DVC, reads `dvc.yaml`,
`params.yaml` and `dvc.lock`, expands the `foreach`/`matrix` stages and checks every dependency
and output against the lock file. Three whole processes are timed, each `--repeats` times in
rotating order after one untimed warm-up round, and reported as medians and as ratios to the
first:

- `dvc --help`: DVC's start alone (interpreter, imports, the command-line parser);
- `dvc status`: the same checks as a no-op repro, nothing run;
- `dvc repro` with nothing to do (the goal: at most 1.5 s for the default pipeline);
- DVC's floor: a no-op `dvc repro` of a synthetic project built in a temporary directory with
  as many stages as the measured pipeline, each with one one-byte file dependency, one
  parameter and one output, no code and no data: what DVC costs for that many stages alone;
- the same shape: a synthetic project whose stages have the measured pipeline's number of
  dependencies each (small files, each its own entry in `dvc.lock`) and its outputs, and
  declare the same parameters of a copy of the same `params.yaml`: what DVC costs for this
  pipeline's stages, dependencies and parameters when no dependency is a directory of data;
- the same parameters: that project again with one dependency per stage: what the stages and
  their parameters cost whatever the dependencies.

Also printed: what DVC checks (stages, dependencies and outputs, and the files behind them, from
`dvc.lock`), the largest entries first.

Default mode times the repository itself and needs the pipeline built: if `dvc status` reports
anything changed it stops and says to run `make repro` first. `--quick` builds a small copy in
a temporary directory (git + DVC, params.yaml restricted to the digits dataset and its
experiments), runs `dvc repro` once, untimed, to build it, then times the no-op once.
Usage: `python benchmarks/noop_repro.py [--repeats 5] [--quick] [--keep]`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from ruamel.yaml import YAML

PROJECT_ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
GOAL_S = 1.5
QUICK_DATASET = "digits"
COPIED = ("dvc.yaml", "pyproject.toml", ".dvcignore", ".gitignore")
MEASURES = {
    "start": ("dvc", "--help"),
    "status": ("dvc", "status"),
    "repro": ("dvc", "repro"),
    "floor": ("dvc", "repro"),  # in the synthetic project
    "shape": ("dvc", "repro"),  # in the synthetic project of the same shape
    "params": ("dvc", "repro"),  # in that project with one dependency per stage
}
LABELS = {
    "start": "`dvc --help` (DVC's start)",
    "status": "`dvc status`, nothing changed",
    "repro": "`dvc repro`, nothing to do",
    "floor": "DVC's floor: `dvc repro`, nothing to do, same number of trivial stages",
    "shape": "Same shape: `dvc repro`, nothing to do, same deps and params per stage, no data",
    "params": "Same params: the same shape with one dependency per stage",
}


def read_params(path: Path) -> dict:
    """`params.yaml` as DVC reads it: YAML 1.2 (PyYAML's 1.1 would read `1e-3` as text)."""
    return YAML(typ="safe", pure=True).load(path.read_text())


def write_params(path: Path, params: dict) -> None:
    with path.open("w") as stream:
        YAML(typ="safe", pure=True).dump(params, stream)


def tool_env() -> dict[str, str]:
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "DVC_NO_ANALYTICS": "1",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }
    env.pop("PYTHONPATH", None)
    return env


def run(command: tuple[str, ...] | list[str], cwd: Path, env: dict[str, str]) -> str:
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return result.stdout + result.stderr


def timed(command: tuple[str, ...], cwd: Path, env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    output = run(command, cwd, env)
    return time.perf_counter() - started, output


def make_quick_copy(destination: Path, env: dict[str, str]) -> None:
    """A committed git + DVC copy of the project holding only the digits experiments, built."""
    shutil.copytree(
        PROJECT_ROOT / "pipeline",
        destination / "pipeline",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    for name in COPIED:
        if (PROJECT_ROOT / name).exists():
            shutil.copy2(PROJECT_ROOT / name, destination / name)
    params = read_params(PROJECT_ROOT / "params.yaml")
    params["data"]["datasets"] = [QUICK_DATASET]
    params["experiments"] = {
        name: experiment
        for name, experiment in params["experiments"].items()
        if experiment["dataset"] == QUICK_DATASET
    }
    crossval = params.get("crossval", {})
    kept = [name for name in crossval.get("experiments", []) if name in params["experiments"]]
    params["crossval"] = (
        {**crossval, "experiments": kept} if kept else {"experiments": [], "folds": []}
    )
    write_params(destination / "params.yaml", params)
    for command in (
        ["git", "init", "--quiet"],
        ["git", "config", "user.name", "Atelier benchmark"],
        ["git", "config", "user.email", "bench@atelier.invalid"],
        ["dvc", "init", "--quiet"],
    ):
        run(command, destination, env)
    shutil.copy2(PROJECT_ROOT / ".dvc" / "config", destination / ".dvc" / "config")
    run(["git", "add", "--all"], destination, env)
    run(["git", "commit", "--quiet", "--message", "project copy"], destination, env)
    run(["dvc", "repro"], destination, env)


def init_and_build(destination: Path, env: dict[str, str]) -> None:
    """Make `destination` a git + DVC repository and build its pipeline once."""
    for command in (
        ["git", "init", "--quiet"],
        ["git", "config", "user.name", "Atelier benchmark"],
        ["git", "config", "user.email", "bench@atelier.invalid"],
        ["dvc", "init", "--quiet"],
        ["dvc", "repro", "--quiet"],
    ):
        run(command, destination, env)


def make_floor_project(destination: Path, stages: int, env: dict[str, str]) -> None:
    """A built git + DVC project of `stages` trivial stages (`foreach` over a params list): each
    depends on one one-byte file and its own parameter and writes one file."""
    items = [f"s{index}" for index in range(stages)]
    write_params(destination / "params.yaml", {"items": items, "value": dict.fromkeys(items, 1)})
    (destination / "input").write_text("1")
    stage = {
        "foreach": "${items}",
        "do": {
            "cmd": "echo ${item} > out_${item}",
            "deps": ["input"],
            "params": ["value.${item}"],
            "outs": ["out_${item}"],
        },
    }
    (destination / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"trivial": stage}}))
    init_and_build(destination, env)


def locked_stages(root: Path, env: dict[str, str]) -> dict[str, dict]:
    """`dvc.lock`'s entries of the stages `dvc.yaml` defines now (the lock keeps the entries of
    stages since removed until it is cleaned)."""
    current = set(run(["dvc", "stage", "list", "--name-only"], root, env).split())
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    return {name: entry for name, entry in lock.get("stages", {}).items() if name in current}


def make_shape_project(
    destination: Path, root: Path, env: dict[str, str], *, most_deps: int | None = None
) -> None:
    """A built git + DVC project with the shape of `root`'s `dvc.lock`: per stage, as many
    small-file dependencies (at most `most_deps`) and outputs as it lists, and the same
    parameters, read from a copy of `root`'s `params.yaml`. Stage k's dependency j is the file
    `deps/f<j>` (shared across stages, as the real code deps are); its outputs `outs/<k>-<i>`."""
    shutil.copy2(root / "params.yaml", destination / "params.yaml")
    (destination / "deps").mkdir()
    (destination / "outs").mkdir()
    stages, widest = {}, 0
    for index, stage in enumerate(locked_stages(root, env).values()):
        deps = stage.get("deps", [])[:most_deps]
        outs = stage.get("outs", [])
        params = [key for entries in stage.get("params", {}).values() for key in entries]
        widest = max(widest, len(deps))
        outputs = [f"outs/{index}-{out}" for out in range(len(outs))]
        stages[f"s{index}"] = {
            "cmd": " && ".join(f"echo {index} > {path}" for path in outputs) or "true",
            "deps": [f"deps/f{dep}" for dep in range(len(deps))],
            **({"params": params} if params else {}),
            **({"outs": outputs} if outputs else {}),
        }
    for dep in range(widest):
        (destination / "deps" / f"f{dep}").write_text(f"{dep}\n" * 40)
    (destination / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    init_and_build(destination, env)


def require_up_to_date(root: Path, env: dict[str, str]) -> None:
    """Stop with the fix when `dvc status` finds anything to run: a no-op needs a built pipeline."""
    result = subprocess.run(
        ["dvc", "status", "--json"], cwd=root, env=env, capture_output=True, text=True
    )
    if result.returncode != 0:
        sys.exit(f"dvc status failed:\n{result.stdout}\n{result.stderr}")
    changed = sorted(json.loads(result.stdout or "{}"))
    if changed:
        shown = ", ".join(changed[:5]) + (" …" if len(changed) > 5 else "")
        sys.exit(
            f"error: the pipeline is not up to date ({len(changed)} stage(s) changed: {shown}); "
            "a no-op `dvc repro` needs it built. Run `make repro` first, then this benchmark "
            "again (or `--quick` for a small copy built in a temporary directory)."
        )


def lock_summary(
    root: Path, env: dict[str, str]
) -> tuple[int, int, int, int, list[tuple[int, str]]]:
    """From dvc.lock: stages, dependency/output entries, distinct paths, the files behind those
    paths, and the five paths with the most files."""
    stages = locked_stages(root, env)
    files: dict[str, int] = {}
    entries = 0
    for stage in stages.values():
        for entry in [*stage.get("deps", []), *stage.get("outs", [])]:
            entries += 1
            files[entry["path"]] = int(entry.get("nfiles", 1))
    largest = sorted(((count, path) for path, count in files.items()), reverse=True)[:5]
    return len(stages), entries, len(files), sum(files.values()), largest


def measure(
    root: Path, synthetic: dict[str, Path], repeats: int, env: dict[str, str]
) -> dict[str, list[float]]:
    names = list(MEASURES)
    where = {name: synthetic.get(name, root) for name in names}
    for name in names:  # warm-up: page cache, DVC's state database
        timed(MEASURES[name], where[name], env)
    times: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            elapsed, output = timed(MEASURES[name], where[name], env)
            if name != "status" and "Running stage" in output:
                sys.exit(f"`dvc repro` ran a stage; the pipeline was not up to date:\n{output}")
            times[name].append(elapsed)
    return times


def summary(times: list[float]) -> str:
    if len(times) == 1:
        return f"{times[0]:.2f} s"
    return f"{statistics.median(times):.2f} s ({min(times):.2f}–{max(times):.2f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--repeats", type=int, help="timed runs of each (default 5; 1 with --quick)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="a small copy (digits) built in a temporary dir"
    )
    parser.add_argument("--keep", action="store_true", help="keep the --quick copy")
    args = parser.parse_args()
    repeats = args.repeats or (1 if args.quick else 5)

    env = tool_env()
    load_before = os.getloadavg()[0]
    copy = Path(tempfile.mkdtemp(prefix="atelier-bench-noop-")) if args.quick else None
    synthetic = {
        name: Path(tempfile.mkdtemp(prefix=f"atelier-bench-{name}-"))
        for name in ("floor", "shape", "params")
    }
    try:
        if copy is not None:
            started = time.perf_counter()
            make_quick_copy(copy, env)
            built_s = time.perf_counter() - started
            root = copy
        else:
            root = PROJECT_ROOT
            require_up_to_date(root, env)
        stages, entries, paths, files, largest = lock_summary(root, env)
        make_floor_project(synthetic["floor"], stages, env)
        make_shape_project(synthetic["shape"], root, env)
        make_shape_project(synthetic["params"], root, env, most_deps=1)
        times = measure(root, synthetic, repeats, env)
    finally:
        for directory in synthetic.values():
            shutil.rmtree(directory, ignore_errors=True)
        if copy is not None and args.keep:
            print(f"kept {copy}", file=sys.stderr)
        elif copy is not None:
            shutil.rmtree(copy, ignore_errors=True)

    dvc_version = run(["dvc", "--version"], PROJECT_ROOT, env).strip()
    where = (
        f"a small copy (--quick: the {QUICK_DATASET} dataset and its experiments, built in "
        f"{built_s:.0f} s, untimed)"
        if args.quick
        else "the repository"
    )
    print(
        f"Machine: {os.cpu_count()} cores, Python {platform.python_version()}, DVC "
        f"{dvc_version}; {where}; median of {repeats} run(s) after a warm-up; load average "
        f"{load_before:.2f} before, {os.getloadavg()[0]:.2f} after.\n"
    )
    start = statistics.median(times["start"])
    print("| Measure | Time, median (min–max) | Ratio | Goal | |")
    print("|---|---:|---:|---:|---|")
    for name in MEASURES:
        median = statistics.median(times[name])
        goal, verdict = "", ""
        if name == "repro":
            goal = f"≤ {GOAL_S} s"
            verdict = "met" if median <= GOAL_S else "**missed**"
            if args.quick:
                verdict += " (small copy)"
        if name in synthetic:
            verdict = f"ours is {statistics.median(times['repro']) / median:.2f}× this" + (
                f"; above {GOAL_S} s itself" if median > GOAL_S else ""
            )
        ratio = "1" if name == "start" else f"{median / start:.2f}×"
        print(f"| {LABELS[name]} | {summary(times[name])} | {ratio} | {goal} | {verdict} |")
    print(
        f"\nWhat DVC checks: {stages} stages with {entries} dependencies and outputs in "
        f"dvc.lock, {paths} distinct paths holding {files} files; the most files: "
        + ", ".join(f"`{path}` ({count})" for count, path in largest)
        + "."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
