"""Time the Prefect flows against plain DVC; print Markdown tables for benchmarks/RESULTS.md.

What is measured, each as the wall time of a whole command (interpreter start and imports
included), in throwaway git + DVC copies of the project, with a Prefect server already up
(`prefect server start` on 127.0.0.1, started here with its own database):

- the `training` flow (`python -m flows.training`) versus `dvc repro`, every stage to run, on
  fresh copies (alternating which goes first), and both again with nothing to do;
- the `sweep` flow over the same grid with one slot (`-j 1`) and with two (`-j 2`).

`--pipeline digits` (default) runs the digits experiments of params.yaml; `--pipeline default`
runs params.yaml as it is (about 10 minutes per run on 2 cores). Usage:
`python benchmarks/flow_overhead.py [--pipeline digits|default] [--repeats 2] [--points 4]`.
`--quick` runs `digits_sgd` alone (no TensorFlow) through a pipeline that ends at evaluate, once,
and a sweep of one point: a check that the script still runs, not a measurement.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml
from ruamel.yaml import YAML

PROJECT_ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
QUICK_STAGES = ("download", "preprocess", "split", "train", "evaluate")
QUICK_NOTE = " (--quick: `digits_sgd` alone, download to evaluate; not a measurement)"


@dataclass(frozen=True)
class Shape:
    """What a project copy keeps: `pipeline` "digits" or "default"; `only` one experiment of
    it; `stages` those stage groups of dvc.yaml (all when None)."""

    pipeline: str
    only: str | None = None
    stages: tuple[str, ...] | None = None


def read_params(path: Path) -> dict:
    """`params.yaml` as DVC reads it: YAML 1.2 (PyYAML's 1.1 would read `1e-3` as text)."""
    return YAML(typ="safe", pure=True).load(path.read_text())


def write_params(path: Path, params: dict) -> None:
    with path.open("w") as stream:
        YAML(typ="safe", pure=True).dump(params, stream)


def make_copy(destination: Path, shape: Shape, env: dict[str, str]) -> Path:
    """A committed git + DVC copy of the project, shrunk to `shape`."""
    destination.mkdir(parents=True)
    for package in ("pipeline", "flows"):
        shutil.copytree(
            PROJECT_ROOT / package,
            destination / package,
            ignore=shutil.ignore_patterns("__pycache__"),
        )
    for name in ("dvc.yaml", "prefect.yaml", "pyproject.toml", ".dvcignore", ".gitignore"):
        shutil.copy2(PROJECT_ROOT / name, destination / name)
    if shape.stages is not None:
        stages = yaml.safe_load((destination / "dvc.yaml").read_text())
        stages["stages"] = {k: v for k, v in stages["stages"].items() if k in shape.stages}
        (destination / "dvc.yaml").write_text(yaml.safe_dump(stages, sort_keys=False))
    params = read_params(PROJECT_ROOT / "params.yaml")
    if shape.pipeline == "digits":
        params["data"]["datasets"] = ["digits"]
        params["experiments"] = {
            name: experiment
            for name, experiment in params["experiments"].items()
            if experiment["dataset"] == "digits" and shape.only in (None, name)
        }
    crossval = params.get("crossval", {})
    kept = [name for name in crossval.get("experiments", []) if name in params["experiments"]]
    params["crossval"] = (
        {**crossval, "experiments": kept} if kept else {"experiments": [], "folds": []}
    )
    write_params(destination / "params.yaml", params)
    for command in (
        ["git", "init", "--quiet"],
        ["git", "config", "user.name", "bench"],
        ["git", "config", "user.email", "bench@atelier.invalid"],
        [str(BIN / "dvc"), "init", "--quiet"],
        ["cp", str(PROJECT_ROOT / ".dvc" / "config"), ".dvc/config"],
        ["git", "add", "--all"],
        ["git", "commit", "--quiet", "-m", "copy"],
    ):
        subprocess.run(command, cwd=destination, env=env, check=True, capture_output=True)
    return destination


def timed(command: list[str], cwd: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return elapsed


def start_server(home: Path, env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/api"
    server = subprocess.Popen(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env={**env, "PREFECT_HOME": str(home), "PREFECT_UI_ENABLED": "false"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return server, url
        except OSError:
            time.sleep(0.2)
    os.killpg(server.pid, signal.SIGKILL)
    sys.exit("prefect server did not become healthy in 120 s")


def summary(times: list[float]) -> str:
    if len(times) == 1:
        return f"{times[0]:.1f} s"
    return f"{statistics.median(times):.1f} s ({min(times):.1f}–{max(times):.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--pipeline", choices=("digits", "default"), default="digits")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--points", type=int, default=4, help="sweep points; 0 skips the sweep")
    parser.add_argument(
        "--quick", action="store_true", help="digits_sgd only, one run, one point: a smoke check"
    )
    args = parser.parse_args()
    shape, slot_counts = Shape(args.pipeline), (1, 2)
    if args.quick:
        args.pipeline, args.repeats, args.points = "digits", 1, 1
        shape, slot_counts = Shape("digits", "digits_sgd", QUICK_STAGES), (1,)
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "DVC_NO_ANALYTICS": "1",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    env.pop("PYTHONPATH", None)
    work = Path(tempfile.mkdtemp(prefix="atelier-flow-bench-"))
    server, url = start_server(work / "prefect-home", env)
    env.update(PREFECT_API_URL=url, PREFECT_HOME=str(work / "prefect-home"))
    flow = [str(BIN / "python"), "-m", "flows.training"]
    repro = [str(BIN / "dvc"), "repro"]
    times: dict[str, list[float]] = {}
    try:
        for repeat in range(args.repeats):
            by_flow = make_copy(work / f"flow{repeat}", shape, env)
            by_repro = make_copy(work / f"repro{repeat}", shape, env)
            order = [("flow", flow, by_flow), ("repro", repro, by_repro)]
            for name, command, root in order if repeat % 2 == 0 else order[::-1]:
                times.setdefault(name, []).append(timed(command, root, env))
                print(f"{name} run {repeat + 1}: {times[name][-1]:.1f} s", file=sys.stderr)
            for name, command, root in order:
                times.setdefault(f"{name} no-op", []).append(timed(command, root, env))

        if args.points == 0:
            return report(args, times)
        sweep_root = make_copy(work / "sweep", shape, env)
        experiment = "digits_sgd" if args.pipeline == "digits" else "fashion_sgd"
        subprocess.run(repro + [f"split@{experiment.split('_')[0]}"], cwd=sweep_root, env=env,
                       check=True, capture_output=True)  # fmt: skip
        subprocess.run(["git", "commit", "--quiet", "--all", "-m", "data"], cwd=sweep_root,
                       env=env, check=True, capture_output=True)  # fmt: skip
        values = ",".join(str(5 + index) for index in range(args.points))
        grid = f"experiments.{experiment}.model.max_iter={values}"
        for slots in slot_counts:
            command = [str(BIN / "python"), "-m", "flows.sweep", "-e", experiment, "-g", grid]
            times[f"sweep {slots}"] = [timed([*command, "-j", str(slots)], sweep_root, env)]
            print(
                f"sweep with {slots} slot(s): {times[f'sweep {slots}'][0]:.1f} s", file=sys.stderr
            )
    finally:
        os.killpg(server.pid, signal.SIGINT)
        server.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)

    report(args, times)


def report(args: argparse.Namespace, times: dict[str, list[float]]) -> None:
    flow_median = statistics.median(times["flow"])
    repro_median = statistics.median(times["repro"])
    print(f"Machine: {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"pipeline `{args.pipeline}`{QUICK_NOTE if args.quick else ''}, {args.repeats} "
          "fresh runs each.\n")  # fmt: skip
    print("| Measure | Time | Ratio |\n|---|---:|---:|")
    print(f"| `dvc repro`, every stage runs | {summary(times['repro'])} | 1 |")
    print(f"| `python -m flows.training`, every stage runs | {summary(times['flow'])} | "
          f"{flow_median / repro_median:.2f}× |")  # fmt: skip
    noop_flow, noop_repro = (statistics.median(times[k]) for k in ("flow no-op", "repro no-op"))
    print(f"| `dvc repro`, nothing to do | {summary(times['repro no-op'])} | 1 |")
    print(f"| `python -m flows.training`, nothing to do | {summary(times['flow no-op'])} | "
          f"{noop_flow / noop_repro:.2f}× |")  # fmt: skip
    sweeps = sorted(
        (int(key.split()[1]), value[0]) for key, value in times.items() if key.startswith("sweep ")
    )
    points = f"{args.points} point{'s' if args.points != 1 else ''}"
    for slots, elapsed in sweeps:
        ratio = "1" if slots == sweeps[0][0] else f"speed-up {sweeps[0][1] / elapsed:.2f}×"
        label = "slot" if slots == 1 else "slots"
        print(f"| sweep, {points}, {slots} {label} | {elapsed:.1f} s | {ratio} |")


if __name__ == "__main__":
    main()
