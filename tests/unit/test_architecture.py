"""The shape of the code, held by tests: imports go one way, and `dvc.yaml` tells the truth.

The import graph is read statically from every module of `pipeline/` and `flows/`, imports inside
functions included (they run when the stage does), so a lazy import is no way around a check:

- no import cycles among project modules;
- layers import only downward: core → params → data, figures → tasks → modeling, registry →
  stages → the command line (`pipeline.__main__`, `pipeline.cli`) and `flows`;
- the data stages, `report`, `select`, `diff` and `flows/` never reach TensorFlow or Keras
  (nor JAX or PyTorch);
- every `dvc.yaml` stage declares as deps exactly the project modules its command can run
  (the command line's own imports — `pipeline/__main__.py`, `pipeline/cli` — without the other
  commands' handlers, plus the stage's module and everything it imports), and
  a stage that works on one dataset depends on that dataset's directories only.
"""

from __future__ import annotations

import ast
import copy
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("pipeline", "flows")
HEAVY = ("tensorflow", "keras", "dvclive.keras", "jax", "torch")

# `python -m pipeline <command>`: the module each command of dvc.yaml runs.
COMMAND_MODULES = {
    "download": "pipeline.stages.download",
    "preprocess": "pipeline.stages.preprocess",
    "split": "pipeline.stages.split",
    "train": "pipeline.stages.train",
    "crossval": "pipeline.stages.crossval",
    "evaluate": "pipeline.stages.evaluate",
    "report": "pipeline.stages.report",
    "select": "pipeline.stages.select",
}
# The infrastructure every command loads (errors, io, paths, logging, the params schema, the
# parser): a stage depends on each as one directory, which keeps dvc.lock short (a no-op
# `dvc repro` parses it) at the cost of re-running on a change to a module of them it skips.
INFRASTRUCTURE = ("pipeline/core", "pipeline/params", "pipeline/cli")
ENTRY = "pipeline.__main__"
COMMAND_LINE = "pipeline.cli"  # the parser and handlers behind `python -m pipeline` and `atelier`

# Lower layers first; a module may import its own layer's modules and any lower layer's.
LAYERS = (
    ("pipeline.core",),
    ("pipeline.data", "pipeline.figures"),
    ("pipeline.params",),
    ("pipeline.tasks",),
    ("pipeline.modeling",),
    ("pipeline.stages",),
    ("pipeline.registry",),
    ("pipeline.__main__", "pipeline.cli", "pipeline", "flows"),
)
# The modules that handle a command of the command line: `python -m pipeline X` runs X's only.
HANDLERS = ("pipeline.stages", "pipeline.registry", "flows")


# --- the import graph -------------------------------------------------------------------------


class Graph:
    """Project modules, their files, what each imports (anywhere in it), and heavy imports."""

    def __init__(self, root: Path = ROOT):
        self.files: dict[str, Path] = {}
        for package in PACKAGES:
            for path in sorted((root / package).rglob("*.py")):
                parts = path.relative_to(root).with_suffix("").parts
                name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
                self.files[name] = path.relative_to(root)
        self.imports: dict[str, set[str]] = {}
        self.top_level: dict[str, set[str]] = {}
        self.external: dict[str, set[str]] = {}
        for name, path in self.files.items():
            tree = ast.parse((root / path).read_text())
            _drop_type_checking_blocks(tree)
            self.imports[name], self.external[name] = self._imports(ast.walk(tree))
            self.top_level[name], _ = self._imports(tree.body)

    def _imports(self, nodes) -> tuple[set[str], set[str]]:
        project, external = set(), set()
        for node in nodes:
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
            else:
                continue
            for target in targets:
                found = self._project_module(target)
                if found:
                    project.add(found)
                else:
                    external.add(target)
        return project, external

    def _project_module(self, dotted: str) -> str | None:
        return dotted if dotted in self.files else None

    def closure(self, start: set[str]) -> set[str]:
        """Every project module reachable from `start`, with the packages they are in."""
        seen, todo = set(), list(start)
        while todo:
            module = todo.pop()
            if module in seen:
                continue
            seen.add(module)
            # A package's __init__ runs before any of its modules.
            package = module.rpartition(".")[0]
            while package:
                if package in self.files and package not in seen:
                    todo.append(package)
                package = package.rpartition(".")[0]
            todo.extend(self.imports[module] - seen)
        return seen

    def stage_modules(self, command: str) -> set[str]:
        """What `python -m pipeline <command>` can import: the command line's own imports
        (not the other commands' handlers) and the command's module, each with all it imports."""
        edges = dict(self.imports)
        for module in self.files:
            if module == ENTRY or module.startswith(COMMAND_LINE):
                # Another command's handler is imported inside the function that runs it;
                # whatever is imported at module level runs for every command.
                lazy = self.imports[module] - self.top_level[module]
                handlers = {target for target in lazy if target.startswith(HANDLERS)}
                edges[module] = self.imports[module] - handlers
        edges[ENTRY] = edges[ENTRY] | {COMMAND_MODULES[command]}
        saved, self.imports = self.imports, edges
        try:
            return self.closure({ENTRY})
        finally:
            self.imports = saved

    def suggested_deps(self, command: str) -> list[str]:
        """The code deps of a stage running `command`: a package directory where the stage can
        import every module in it and it holds nothing else, the files otherwise."""
        files = {self.files[module].as_posix() for module in self.stage_modules(command)}
        packages = sorted(
            {path.rpartition("/")[0] for path in files if path.count("/") >= 2},
            key=len,
        )
        deps: list[str] = [
            package
            for package in INFRASTRUCTURE
            if any(path.startswith(package + "/") for path in files)
        ]
        for package in packages:
            inside = files_under(package)
            covered = any(package == d or package.startswith(d + "/") for d in deps)
            if inside <= files and not covered:
                deps.append(package)
        for path in sorted(files):
            if not any(path.startswith(d + "/") for d in deps):
                deps.append(path)
        return sorted(deps)


def _drop_type_checking_blocks(tree: ast.AST) -> None:
    """Remove `if TYPE_CHECKING:` blocks: their imports are for type checkers and never run."""
    for node in ast.walk(tree):
        for field in ("body", "orelse"):
            block = getattr(node, field, None)
            if isinstance(block, list):
                block[:] = [
                    child
                    for child in block
                    if not (
                        isinstance(child, ast.If)
                        and getattr(child.test, "id", getattr(child.test, "attr", ""))
                        == "TYPE_CHECKING"
                    )
                ]


def files_under(dep: str) -> set[str]:
    """The files DVC hashes for a dep: the file itself, or every file under the directory (data
    files too: a YAML file next to the modules re-runs the stage when it changes)."""
    path = ROOT / dep
    if path.is_file():
        return {dep}
    return {
        found.relative_to(ROOT).as_posix()
        for found in path.rglob("*")
        if found.is_file() and "__pycache__" not in found.parts
    }


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                return stack[stack.index(target) :] + [target]
            if target not in state and (found := visit(target)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


def layer_of(module: str) -> int:
    best = None
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            inside = module == prefix or module.startswith(prefix + ".")
            if inside and (best is None or len(prefix) > best[1]):
                best = (index, len(prefix))
    assert best is not None, f"{module} is in no layer: add it to LAYERS"
    return best[0]


@pytest.fixture(scope="module")
def graph() -> Graph:
    return Graph()


# --- cycles and layers --------------------------------------------------------------------------


def test_no_import_cycles(graph):
    assert find_cycle(graph.imports) is None


def test_the_cycle_check_finds_a_cycle():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(edges) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_layers_import_only_downward(graph):
    upward = [
        f"{module} (layer {layer_of(module)}) imports {target} (layer {layer_of(target)})"
        for module, targets in graph.imports.items()
        for target in targets
        if target != "pipeline" and layer_of(target) > layer_of(module)
    ]
    assert upward == []


def test_light_stages_and_flows_never_reach_tensorflow(graph):
    light = {
        f"python -m pipeline {command}": graph.stage_modules(command)
        for command in ("download", "preprocess", "split", "report", "select")
    }
    light["python -m pipeline diff"] = graph.closure({"pipeline.stages.diff"})
    for name in graph.files:
        if name.startswith("flows"):
            light[name] = graph.closure({name})
    reached = {}
    for start, modules in light.items():
        for module in modules:
            heavy = {name for name in graph.external[module] if name.startswith(HEAVY)}
            if heavy:
                reached.setdefault(start, set()).add(f"{module}: {', '.join(sorted(heavy))}")
    assert reached == {}


# --- dvc.yaml ------------------------------------------------------------------------------------


def command_of(stage: dict) -> str:
    words = stage["cmd"].split()
    assert words[:3] == ["python", "-m", "pipeline"], stage["cmd"]
    return words[3]


def stage_templates(dvc: dict) -> dict[str, dict]:
    """Each stage of dvc.yaml as written (a foreach stage's `do` template)."""
    return {name: body.get("do", body) for name, body in dvc["stages"].items()}


def code_dep_problems(dvc: dict, graph: Graph) -> list[str]:
    """What is wrong with each stage's code deps: modules it can run that no dep covers, and
    deps that cover nothing it runs."""
    problems = []
    for name, stage in stage_templates(dvc).items():
        deps = [str(dep) for dep in stage.get("deps", [])]
        code = [dep.rstrip("/") for dep in deps if dep.startswith(PACKAGES)]
        files = {
            graph.files[module].as_posix() for module in graph.stage_modules(command_of(stage))
        }

        def covered(path: str, code=code) -> bool:
            return any(path == dep or path.startswith(dep + "/") for dep in code)

        for path in sorted(path for path in files if not covered(path)):
            problems.append(f"{name}: runs {path}, which is not in its deps")
        for dep in code:
            if dep in INFRASTRUCTURE and any(path.startswith(dep + "/") for path in files):
                continue
            unused = sorted(files_under(dep) - files)
            if unused:
                problems.append(f"{name}: depends on {dep}, but never imports {', '.join(unused)}")
        if problems and problems[-1].startswith(name + ":"):
            problems.append(f"{name}: its code deps are {graph.suggested_deps(command_of(stage))}")
    return problems


def data_dep_problems(dvc: dict) -> list[str]:
    """A stage run per dataset or per experiment depends on its own dataset's data only; a stage
    run once (the report) on no dataset's data at all: it reads the small `data/overview`."""
    problems = []
    for name, stage in stage_templates(dvc).items():
        per_item = "foreach" in dvc["stages"][name] or "matrix" in dvc["stages"][name]
        for dep in map(str, stage.get("deps", [])):
            if dep.startswith(("data/prepared", "data/split", "data/raw")) and "${" not in dep:
                problems.append(
                    f"{name}: depends on all of {dep}, not its own dataset's"
                    if per_item
                    else f"{name}: depends on all of {dep}, not on data/overview"
                )
    return problems


@pytest.fixture(scope="module")
def dvc_yaml() -> dict:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())


def test_every_stage_depends_on_exactly_the_code_it_runs(dvc_yaml, graph):
    assert code_dep_problems(dvc_yaml, graph) == []


def test_every_per_dataset_stage_depends_on_its_own_data_only(dvc_yaml):
    assert data_dep_problems(dvc_yaml) == []


def test_a_missing_dep_or_an_extra_import_is_caught(dvc_yaml, graph):
    # A dep removed from dvc.yaml: the module is reported.
    broken = copy.deepcopy(dvc_yaml)
    deps = broken["stages"]["train"]["do"]["deps"]
    deps.remove("pipeline/params")
    problems = code_dep_problems(broken, graph)
    assert any(problem.startswith("train: runs pipeline/params/") for problem in problems)
    # An import that dvc.yaml does not cover: the report stage starts importing the registry.
    grown = copy.deepcopy(graph)
    grown.imports["pipeline.stages.report"] = grown.imports["pipeline.stages.report"] | {
        "pipeline.registry.core"
    }
    assert "report: runs pipeline/registry/core.py, which is not in its deps" in (
        code_dep_problems(dvc_yaml, grown)
    )
    # A dep the stage never imports is reported too.
    extra = copy.deepcopy(dvc_yaml)
    extra["stages"]["split"]["do"]["deps"].append("pipeline/modeling")
    assert any(
        problem.startswith("split: depends on pipeline/modeling, but never imports ")
        for problem in code_dep_problems(extra, graph)
    )
    # And a per-dataset stage reading every dataset's data.
    wide = copy.deepcopy(dvc_yaml)
    wide["stages"]["evaluate"]["do"]["deps"].append("data/prepared")
    assert data_dep_problems(wide) == [
        "evaluate: depends on all of data/prepared, not its own dataset's"
    ]
    # And the report reading every dataset's prepared data instead of their overviews.
    heavy = copy.deepcopy(dvc_yaml)
    heavy["stages"]["report"]["deps"].append("data/prepared")
    assert data_dep_problems(heavy) == [
        "report: depends on all of data/prepared, not on data/overview"
    ]
