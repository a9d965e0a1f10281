"""The model registry against real git, DVC and GTO in throwaway repositories.

Two kinds of project copy:

- a *registry-only* copy whose dvc.yaml holds just the `select` stage and the artifacts, fed with
  hand-written metrics and baseline-format models (no TensorFlow: seconds per test) — for the
  refusals, the race, hash verification (a forged card or model in the DVC cache or remote is
  refused by every command that would use it), fetching from the DVC remote, the promotion
  order (`registry.stage_order`), and the README's registry block run line by line as written;
- the *whole pipeline* on digits (`slow`): train → evaluate → select → register → promote,
  a worse champion refused by name, a better one promoted, rollback, `get` and `load`.

Every repository has a local directory as its default DVC remote.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline.modeling.models import LinearPredictor
from pipeline.registry import FilesMismatch, NothingToRegister, Registry, RegistryError, load
from pipeline.registry.tags import create_tag

PROJECT_FILES = ("pyproject.toml", ".dvcignore", ".gitignore")
ARTIFACT = "digits-classifier"


class Project:
    """A git + DVC repository holding a copy of the project; runs commands in it."""

    def __init__(self, project_root: Path, root: Path):
        self.root = root
        self.venv_bin = project_root / ".venv" / "bin"
        self.env = {
            **os.environ,
            "PATH": f"{self.venv_bin}{os.pathsep}{os.environ.get('PATH', '')}",
            "DVC_NO_ANALYTICS": "1",
            "GIT_CONFIG_NOSYSTEM": "1",
            "PYTHONPATH": str(root),
        }

    def run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(
            command, cwd=self.root, env=self.env, capture_output=True, text=True, timeout=300
        )
        if check:
            assert result.returncode == 0, f"{command} failed:\n{result.stdout}\n{result.stderr}"
        return result

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.run(sys.executable, "-m", "pipeline", *args, check=check)

    def registry(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.cli("registry", *args, check=check)

    def commit(self, message: str) -> str:
        self.run("git", "add", "--all")
        self.run("git", "commit", "--quiet", "--message", message)
        return self.run("git", "rev-parse", "HEAD").stdout.strip()

    def params(self) -> dict:
        return yaml.safe_load((self.root / "params.yaml").read_text())

    def write_params(self, params: dict) -> None:
        (self.root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    def gto_show(self, *args: str):
        return json.loads(self.run(str(self.venv_bin / "gto"), "show", *args, "--json").stdout)

    def show(self) -> dict:
        return json.loads(self.registry("show", ARTIFACT, "--json").stdout)[ARTIFACT]


def make_project(project_root: Path, tmp_path: Path, *, only_select: bool) -> Project:
    root = tmp_path / "project"
    root.mkdir()
    shutil.copytree(
        project_root / "pipeline", root / "pipeline", ignore=shutil.ignore_patterns("__pycache__")
    )
    for name in PROJECT_FILES:
        if (project_root / name).exists():
            shutil.copy2(project_root / name, root / name)
    pipeline = yaml.safe_load((project_root / "dvc.yaml").read_text())
    if only_select:
        pipeline = {"stages": {"select": pipeline["stages"]["select"]}} | {
            "artifacts": pipeline["artifacts"]
        }
    (root / "dvc.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False))
    params = yaml.safe_load((project_root / "params.yaml").read_text())
    params["data"]["datasets"] = ["digits"]
    params["registry"] = {
        "metric": "test_accuracy",
        "min_improvement": 0.0,
        "require_beat_baseline": True,
        "stages": {"staging": {"test_accuracy": 0.5}, "prod": {"test_accuracy": 0.9}},
        "artifacts": {"digits": ARTIFACT},
    }
    params["experiments"] = {}
    params["crossval"] = {"experiments": [], "folds": []}  # no K-fold runs
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    project = Project(project_root, root)
    project.run("git", "init", "--quiet")
    project.run("git", "config", "user.name", "Atelier Test")
    project.run("git", "config", "user.email", "test@atelier.invalid")
    project.run("dvc", "init", "--quiet")
    shutil.copy2(project_root / ".dvc" / "config", root / ".dvc" / "config")
    project.run("dvc", "remote", "add", "--default", "storage", str(tmp_path / "remote"))
    return project


# --- the registry-only project ------------------------------------------------------------------


def write_experiment(project: Project, name: str, *, accuracy: float, seed: int) -> None:
    """Metrics and a baseline-format model for experiment `name`, as evaluate/train would."""
    metrics = {
        "test_accuracy": accuracy,
        "macro_f1": accuracy - 0.01,
        "test_loss": 1.0 - accuracy,
        "model": "sgd_logistic",
        "dataset": "digits",
    }
    (project.root / "metrics").mkdir(exist_ok=True)
    (project.root / "metrics" / f"{name}.json").write_text(json.dumps(metrics))
    directory = project.root / "models" / name
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    LinearPredictor(
        coef=rng.normal(size=(10, 64)).astype(np.float32),
        intercept=np.zeros(10, np.float32),
        classes=np.arange(10),
        value_max=16.0,
    ).save(directory / "model.npz")
    (directory / "train.json").write_text(json.dumps({"model_file": "model.npz"}))


@pytest.fixture
def small(project_root, tmp_path) -> Project:
    """Registry-only project, champion committed: `digits_tuned` (0.93) over `digits_sgd`."""
    project = make_project(project_root, tmp_path, only_select=True)
    params = project.params()
    params["registry"]["require_beat_baseline"] = False
    params["experiments"] = {
        "digits_sgd": {"dataset": "digits", "model": {"name": "sgd_logistic"}},
        "digits_tuned": {"dataset": "digits", "model": {"name": "sgd_logistic", "alpha": 0.001}},
    }
    project.write_params(params)
    write_experiment(project, "digits_sgd", accuracy=0.91, seed=1)
    write_experiment(project, "digits_tuned", accuracy=0.93, seed=2)
    project.run("dvc", "repro", "select@digits")
    project.commit("champion: digits_tuned")
    return project


def new_champion(project: Project, accuracy: float, seed: int) -> str:
    write_experiment(project, "digits_tuned", accuracy=accuracy, seed=seed)
    project.run("dvc", "repro", "select@digits")
    return project.commit(f"champion at {accuracy}")


def test_register_refuses_what_is_not_a_new_committed_champion(small):
    unknown = small.registry("register", "nope", check=False)
    assert unknown.returncode == 2
    assert "error: Unknown artifact 'nope': this project's artifacts are digits-classifier" in (
        unknown.stderr
    )
    assert "Traceback" not in unknown.stderr

    first = small.registry("register", ARTIFACT)
    assert first.stdout.startswith(f"Registered {ARTIFACT} v0.1.0 at ")
    again = small.registry("register", ARTIFACT, check=False)
    assert again.returncode == 2
    assert "is already registered as digits-classifier v0.1.0: nothing to register" in again.stderr

    registry = Registry(small.root)
    (small.root / "NOTES.md").write_text("a commit that does not touch the champion\n")
    small.commit("notes")
    with pytest.raises(
        NothingToRegister, match="is the model of digits-classifier v0.1.0: nothing"
    ):
        registry.register(ARTIFACT)

    (small.root / "NOTES.md").write_text("edited, not committed\n")
    with pytest.raises(RegistryError, match=r"uncommitted changes \(NOTES\.md\): a version must"):
        registry.register(ARTIFACT)
    small.commit("notes again")

    write_experiment(small, "digits_tuned", accuracy=0.95, seed=3)  # new metrics, no repro
    small.commit("metrics without dvc repro")
    with pytest.raises(RegistryError) as stale:
        registry.register(ARTIFACT)
    assert "dvc.lock is out of date with the workspace for select@digits: run `dvc repro " in (
        str(stale.value)
    )

    assert [v.version for v in registry.versions(ARTIFACT)] == ["v0.1.0"]
    assert small.run("git", "tag", "--list").stdout.split() == [f"{ARTIFACT}@v0.1.0"]


def test_two_racing_registrations_give_one_version_and_one_clear_refusal(small):
    Registry(small.root).register(ARTIFACT)
    head = new_champion(small, 0.95, seed=4)
    command = [sys.executable, "-m", "pipeline", "registry", "register", ARTIFACT]
    racers = [
        subprocess.Popen(
            command, cwd=small.root, env=small.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(2)
    ]
    outcomes = []
    for racer in racers:
        stdout, stderr = racer.communicate(timeout=120)
        outcomes.append((racer.returncode, stdout.decode(), stderr.decode()))
    registered = [out for rc, out, _ in outcomes if rc == 0]
    refused = [err for rc, _, err in outcomes if rc != 0]
    assert len(registered) + len(refused) == 2
    assert len(registered) >= 1, outcomes
    versions = [line.split()[2] for line in registered]
    assert len(set(versions)) == len(versions), outcomes  # never the same version twice
    for error in refused:
        assert "is already registered as digits-classifier v0.2.0: nothing to register" in error
    tags = small.run("git", "tag", "--list", f"{ARTIFACT}@*").stdout.split()
    assert tags == [f"{ARTIFACT}@v0.1.0", f"{ARTIFACT}@v0.2.0"]
    assert small.run("git", "rev-list", "-n", "1", f"{ARTIFACT}@v0.2.0").stdout.strip() == head
    assert [v["version"] for v in small.gto_show(ARTIFACT)] == ["v0.2.0", "v0.1.0"]

    # The conflict the retry loop relies on: git refuses an existing tag name, atomically.
    assert create_tag(small.root, ARTIFACT, f"{ARTIFACT}@v0.3.0", head, "first")
    assert not create_tag(small.root, ARTIFACT, f"{ARTIFACT}@v0.3.0", head, "second")
    message = small.run("git", "tag", "--list", "--format=%(contents)", f"{ARTIFACT}@v0.3.0")
    assert message.stdout.strip() == "first"


def test_release_promotes_as_far_as_the_rules_allow(small):
    first = small.registry("release", ARTIFACT).stdout
    assert first.startswith("digits-classifier: registered v0.1.0\n")
    assert "v0.1.0 -> staging: promoted [digits-classifier#staging#1]" in first
    assert "v0.1.0 -> prod: promoted [digits-classifier#prod#2]" in first

    new_champion(small, 0.92, seed=6)
    second = small.registry("release", ARTIFACT).stdout
    assert second.startswith("digits-classifier: registered v0.2.0\n")
    assert "v0.2.0 -> staging: refused" in second
    assert "[FAIL] beats the staging holder by at least 0 in test_accuracy" in second
    assert "-> prod" not in second  # the climb stops at the first refusal

    third = small.registry("release", ARTIFACT).stdout
    assert third.startswith("digits-classifier: no new version; latest is v0.2.0\n")
    assert small.gto_show()[ARTIFACT]["stage"] == {"staging": "v0.1.0", "prod": "v0.1.0"}


def test_promote_rollback_and_get_verify_against_dvc_lock(small, tmp_path):
    registry = Registry(small.root)
    registry.register(ARTIFACT)
    promoted = small.registry("promote", ARTIFACT, "--to", "prod")
    assert "digits-classifier v0.1.0 -> prod: promoted [digits-classifier#prod#1]" in (
        promoted.stdout
    )
    assert "[PASS] test_accuracy >= 0.9 for prod: test_accuracy = 0.9300" in promoted.stdout
    new_champion(small, 0.92, seed=5)
    registry.register(ARTIFACT)
    refused = small.registry("promote", ARTIFACT, "--to", "prod", check=False)
    assert refused.returncode == 2
    assert (
        "Refused to promote digits-classifier v0.2.0 to prod: failed rule(s): beats the prod "
        "holder by at least 0 in test_accuracy." in refused.stderr
    )
    assert (
        "[FAIL] beats the prod holder by at least 0 in test_accuracy: 0.9200 vs 0.9300 of v0.1.0"
        in (refused.stderr)
    )
    forced = small.registry("promote", ARTIFACT, "--to", "prod", "--force")
    assert "v0.2.0 -> prod: promoted (forced) [digits-classifier#prod#2]" in forced.stdout
    message = small.run("git", "tag", "--list", "--format=%(contents)", f"{ARTIFACT}#prod#2")
    assert "forced: true (--force; failing rules overridden: beats the prod holder" in (
        message.stdout
    )
    assert registry.holder(ARTIFACT, "prod").version == "v0.2.0"
    assert small.gto_show()[ARTIFACT]["stage"]["prod"] == "v0.2.0"

    rolled = small.registry("rollback", ARTIFACT, "--stage", "prod")
    assert rolled.stdout.strip() == "digits-classifier prod: v0.2.0 -> v0.1.0"
    assert small.show()["stages"]["prod"] == "v0.1.0"
    assert small.gto_show()[ARTIFACT]["stage"]["prod"] == "v0.1.0"
    dvc_get = tmp_path / "dvc-artifacts-get"  # DVC's own reading of the stage tags agrees
    small.run("dvc", "artifacts", "get", ".", ARTIFACT, "--stage", "prod", "-o", str(dvc_get))
    assert json.loads((dvc_get / "card.json").read_text())["value"] == 0.93
    with pytest.raises(RegistryError, match="v0.1.0 is the only version that has held prod"):
        registry.rollback(ARTIFACT, "prod")

    # The local cache is gone: get must fetch from the DVC remote, then verify the hash.
    shutil.rmtree(small.root / ".dvc" / "cache")
    out = tmp_path / "served"
    got = small.registry("get", ARTIFACT, "--stage", "prod", "-o", str(out))
    assert got.stdout.strip() == str(out / "model.npz")
    card = json.loads((out / "card.json").read_text())
    assert card["value"] == 0.93
    assert hashlib.md5((out / "model.npz").read_bytes()).hexdigest() == card["model_md5"]
    v1 = registry.find_version(ARTIFACT, "v0.1.0")
    assert v1.model_md5 == card["model_md5"]
    predictor = load(ARTIFACT, stage="prod", root=small.root)
    assert isinstance(predictor, LinearPredictor)
    assert predictor.predict(np.zeros((3, 8, 8), np.uint8)).shape == (3,)

    # A corrupted object on the remote is caught by the hash check and nothing is written.
    assert not (small.root / ".dvc" / "cache").exists()  # get streamed from the remote
    for cached in (tmp_path / "remote").rglob("*"):
        if cached.is_file() and not cached.name.endswith(".dir"):
            cached.chmod(0o644)
            cached.write_bytes(cached.read_bytes() + b"tampered")
    corrupt_out = tmp_path / "corrupt"
    corrupt = small.registry(
        "get", ARTIFACT, "--version", "v0.1.0", "-o", str(corrupt_out), check=False
    )
    assert corrupt.returncode == 2
    assert "digits-classifier v0.1.0 (commit " in corrupt.stderr
    assert "models/champions/digits/model.npz hashes to md5 " in corrupt.stderr
    assert "the DVC remote's copy of model.npz is corrupt" in corrupt.stderr
    assert "Nothing was decided, written or tagged on these files." in corrupt.stderr
    assert "Traceback" not in corrupt.stderr
    assert list(corrupt_out.iterdir()) == []

    with pytest.raises(
        RegistryError, match=r"has no version v9\.0\.0 \(registered: v0\.1\.0, v0\.2\.0\)"
    ):
        registry.get(ARTIFACT, out, version="v9.0.0")


def cache_file(project: Project, md5: str) -> Path:
    return project.root / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]


def champion_file_in_cache(project: Project, commit: str, name: str) -> tuple[Path, str]:
    """The DVC cache file of champion file `name` at `commit`, found from dvc.lock, and its md5."""
    lock = yaml.safe_load(project.run("git", "show", f"{commit}:dvc.lock").stdout)
    (out,) = lock["stages"]["select@digits"]["outs"]
    listing = json.loads(cache_file(project, out["md5"]).read_text())
    md5 = next(entry["md5"] for entry in listing if entry["relpath"] == name)
    return cache_file(project, md5), md5


def forge(path: Path, content: bytes) -> str:
    """Overwrite a (read-only) DVC cache file, as someone with write access to it could."""
    path.chmod(0o644)
    path.write_bytes(content)
    return hashlib.md5(content).hexdigest()


def forged_card(path: Path, accuracy: float) -> bytes:
    card = json.loads(path.read_text())
    card["metrics"]["test_accuracy"] = card["value"] = accuracy
    return json.dumps(card).encode()


def test_a_forged_card_is_refused_by_promote_and_release_and_never_shown(small):
    registry = Registry(small.root)
    registry.register(ARTIFACT)
    registry.promote(ARTIFACT, "prod")
    v2_commit = new_champion(small, 0.92, seed=5)  # worse than v0.1.0: prod must refuse it
    registry.register(ARTIFACT)
    tags_before = small.run("git", "tag", "--list").stdout
    card_path, card_md5 = champion_file_in_cache(small, v2_commit, "card.json")
    forged_md5 = forge(card_path, forged_card(card_path, 0.9999))
    shown_path = card_path.relative_to(small.root)

    refused = small.registry("promote", ARTIFACT, "--to", "prod", check=False)
    assert refused.returncode == 2
    assert "Traceback" not in refused.stderr
    assert f"digits-classifier v0.2.0 (commit {v2_commit[:7]}) failed verification" in (
        refused.stderr
    )
    assert (
        f"models/champions/digits/card.json hashes to md5 {forged_md5}, but dvc.lock records "
        f"md5 {card_md5}" in refused.stderr
    )
    assert (
        f"the DVC cache entry {shown_path} was changed after the version was registered: "
        "delete it and run `dvc fetch --all-tags`" in refused.stderr
    )
    assert "0.9999" not in refused.stderr
    with pytest.raises(FilesMismatch, match=r"card\.json hashes to md5"):
        registry.promote(ARTIFACT, "staging")
    with pytest.raises(FilesMismatch, match=r"card\.json hashes to md5"):
        registry.release(ARTIFACT)
    assert small.run("git", "tag", "--list").stdout == tags_before  # no stage tag written

    # show lists the forged version, marked, with none of its figures; the others as before.
    rows = {row["version"]: row for row in small.show()["versions"]}
    assert rows["v0.2.0"]["files"] == "MISMATCH"
    assert (rows["v0.2.0"]["metrics"], rows["v0.2.0"]["value"]) == ({}, None)
    assert f"hashes to md5 {forged_md5}" in rows["v0.2.0"]["problem"]
    assert rows["v0.1.0"]["files"] == "verified"
    assert rows["v0.1.0"]["metrics"]["test_accuracy"] == 0.93
    table = small.registry("show", ARTIFACT)
    assert "0.9999" not in table.stdout + table.stderr
    (v2_line,) = [line for line in table.stdout.splitlines() if line.startswith("  v0.2.0")]
    assert "MISMATCH" in v2_line and "digits_tuned" not in v2_line
    assert "  ! v0.2.0 is not shown: digits-classifier v0.2.0 (commit " in table.stdout

    # What the message says to do restores the registered card from the DVC remote.
    card_path.unlink()
    small.run("dvc", "fetch", "--all-tags")
    assert hashlib.md5(card_path.read_bytes()).hexdigest() == card_md5
    assert {row["version"]: row["value"] for row in small.show()["versions"]} == {
        "v0.2.0": 0.92,
        "v0.1.0": 0.93,
    }
    refused_by_rule = small.registry("promote", ARTIFACT, "--to", "prod", check=False)
    assert "[FAIL] beats the prod holder by at least 0 in test_accuracy: 0.9200 vs 0.9300" in (
        refused_by_rule.stderr
    )


def test_rollback_and_get_refuse_a_forged_model_in_the_cache(small, tmp_path):
    registry = Registry(small.root)
    v1 = registry.register(ARTIFACT)
    registry.promote(ARTIFACT, "prod")
    new_champion(small, 0.95, seed=7)
    registry.register(ARTIFACT)
    registry.promote(ARTIFACT, "prod")
    tags_before = small.run("git", "tag", "--list").stdout
    model_path, model_md5 = champion_file_in_cache(small, v1.commit, "model.npz")
    forged_md5 = forge(model_path, model_path.read_bytes() + b"forged")

    rolled = small.registry("rollback", ARTIFACT, "--stage", "prod", check=False)
    assert rolled.returncode == 2
    assert "Traceback" not in rolled.stderr
    assert (
        f"models/champions/digits/model.npz hashes to md5 {forged_md5}, but dvc.lock records "
        f"md5 {model_md5}" in rolled.stderr
    )
    assert small.run("git", "tag", "--list").stdout == tags_before
    assert registry.holder(ARTIFACT, "prod").version == "v0.2.0"
    out = tmp_path / "served"
    with pytest.raises(FilesMismatch, match=r"model\.npz hashes to md5"):
        registry.get(ARTIFACT, out, version="v0.1.0")
    assert list(out.iterdir()) == []


# --- promotion order -----------------------------------------------------------------------------


def test_stage_order_sends_a_version_to_prod_only_through_staging(small):
    params = small.params()
    params["registry"]["stage_order"] = ["staging", "prod"]
    small.write_params(params)
    small.commit("prod only from staging")
    registry = Registry(small.root)
    registry.register(ARTIFACT)

    refused = small.registry("promote", ARTIFACT, "--to", "prod", check=False)
    assert refused.returncode == 2
    assert "failed rule(s): held staging before prod." in refused.stderr
    assert "  [FAIL] held staging before prod: v0.1.0 never held staging" in refused.stderr
    assert "  [PASS] test_accuracy >= 0.9 for prod: test_accuracy = 0.9300" in refused.stderr
    assert "To pass 'held staging before prod': promote v0.1.0 to staging first" in (refused.stderr)
    assert small.run("git", "tag", "--list", f"{ARTIFACT}#*").stdout == ""

    # Held, not holds: v0.1.0 went through staging, then lost it to v0.2.0; prod is open to it.
    registry.promote(ARTIFACT, "staging")
    new_champion(small, 0.95, seed=8)
    registry.register(ARTIFACT)
    registry.promote(ARTIFACT, "staging")
    assert registry.holder(ARTIFACT, "staging").version == "v0.2.0"
    to_prod = small.registry("promote", ARTIFACT, "--to", "prod", "--version", "v0.1.0").stdout
    assert "v0.1.0 -> prod: promoted [digits-classifier#prod#3]" in to_prod
    assert "  [PASS] held staging before prod: v0.1.0 has held staging" in to_prod

    new_champion(small, 0.96, seed=9)
    registry.register(ARTIFACT)
    forced = small.registry("promote", ARTIFACT, "--to", "prod", "--force").stdout
    assert "v0.3.0 -> prod: promoted (forced) [digits-classifier#prod#4]" in forced
    assert "  [FAIL] held staging before prod: v0.3.0 never held staging" in forced
    message = small.run("git", "tag", "--list", "--format=%(contents)", f"{ARTIFACT}#prod#4")
    assert "forced: true (--force; failing rules overridden: held staging before prod)" in (
        message.stdout
    )

    # release climbs staging, then prod: the order holds without --force.
    new_champion(small, 0.97, seed=10)
    released = small.registry("release", ARTIFACT).stdout
    assert "v0.4.0 -> staging: promoted [digits-classifier#staging#5]" in released
    assert "v0.4.0 -> prod: promoted [digits-classifier#prod#6]" in released
    assert "  [PASS] held staging before prod: v0.4.0 has held staging" in released
    assert small.gto_show()[ARTIFACT]["stage"] == {"staging": "v0.4.0", "prod": "v0.4.0"}


# --- the README's registry block ----------------------------------------------------------------


def readme_lifecycle(readme: Path) -> list[str]:
    """The command lines of the fenced bash block after "Lifecycle:" in "## Model registry"."""
    section = re.search(r"^## Model registry\n(.*?)(?=^## |\Z)", readme.read_text(), re.M | re.S)
    assert section, f"{readme} has no '## Model registry' section"
    block = re.search(r"^Lifecycle:\n+```bash\n(.*?)^```", section[1], re.M | re.S)
    assert block, "the Model registry section has no ```bash block after 'Lifecycle:'"
    lines = (line.strip() for line in block[1].splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def test_the_readme_registry_block_runs_as_written(project_root, tmp_path):
    """Each line of the README's lifecycle block, run in the registry-only copy, exits 0.

    What the copy changes, and why: the artifact is the copy's `digits-classifier`; it has no
    training stages, so before each `dvc repro` (which runs only `select` there) the test writes
    what training would have, each time a better champion; `-o /tmp/...` goes to this test's
    directory; `git push origin` pushes to a bare repository standing in for the shared remote.
    """
    lines = readme_lifecycle(project_root / "README.md")
    commands = {match[1] for line in lines if (match := re.search(r"\bregistry (\w+)", line))}
    assert commands >= {"register", "promote", "release", "rollback", "show", "get"}, lines
    project = make_project(project_root, tmp_path, only_select=True)
    params = project.params()
    params["registry"]["require_beat_baseline"] = False  # both experiments are sgd_logistic
    params["registry"]["stage_order"] = yaml.safe_load((project_root / "params.yaml").read_text())[
        "registry"
    ].get("stage_order", [])
    params["experiments"] = {
        "digits_sgd": {"dataset": "digits", "model": {"name": "sgd_logistic"}},
        "digits_tuned": {"dataset": "digits", "model": {"name": "sgd_logistic", "alpha": 0.001}},
    }
    project.write_params(params)
    project.run("git", "init", "--quiet", "--bare", str(tmp_path / "origin.git"))
    project.run("git", "remote", "add", "origin", str(tmp_path / "origin.git"))

    trained = 0
    for line in lines:
        command = line.replace("fashion-mnist-classifier", ARTIFACT)
        command = command.replace("/tmp/", f"{tmp_path}/")
        if command.split()[:2] == ["dvc", "repro"]:
            write_experiment(project, "digits_sgd", accuracy=0.91, seed=1)
            write_experiment(
                project, "digits_tuned", accuracy=0.93 + 0.02 * trained, seed=10 + trained
            )
            trained += 1
        result = project.run("bash", "-c", command, check=False)
        assert result.returncode == 0, f"{line}\n{result.stdout}\n{result.stderr}"
        if command.split()[:2] != ["dvc", "repro"]:  # what repro changes, the next line commits
            status = project.run("git", "status", "--porcelain").stdout
            assert status == "", f"`{line}` left the working tree dirty:\n{status}"

    local = set(project.run("git", "tag", "--list").stdout.split())
    remote = project.run("git", "ls-remote", "--tags", "origin").stdout
    assert local and local == {
        ref.removeprefix("refs/tags/").removesuffix("^{}") for ref in remote.split()[1::2]
    }
    registry = Registry(project.root)
    for version in registry.versions(ARTIFACT):  # the order held all along, with no --force
        held = registry.stages_held(ARTIFACT, version)
        assert "prod" not in held or "staging" in held, (version.version, held)


# --- the whole pipeline -------------------------------------------------------------------------


@pytest.mark.slow
def test_registry_lifecycle_on_the_real_pipeline(project_root, tmp_path):
    project = make_project(project_root, tmp_path, only_select=False)
    params = project.params()
    params["experiments"] = {
        "digits_mlp": {
            "dataset": "digits",
            "model": {"name": "mlp", "units": [64], "dropout": [0.1]},
            "learning_rate": 0.01,
            "epochs": 3,
            "batch_size": 32,
        },
        "digits_sgd": {"dataset": "digits", "model": {"name": "sgd_logistic", "max_iter": 1}},
    }
    project.write_params(params)
    project.commit("project copy")

    # v0.1.0: the MLP beats the baseline and every prod rule.
    project.run("dvc", "repro", "select@digits")
    project.commit("first run")
    card1 = json.loads((project.root / "models/champions/digits/card.json").read_text())
    assert card1["experiment"] == "digits_mlp"
    assert card1["value"] > max(0.9, card1["baseline"]["value"]), card1["leaderboard"]
    assert project.registry("register", ARTIFACT).stdout.startswith(f"Registered {ARTIFACT} v0.1.0")
    promoted = project.registry("promote", ARTIFACT, "--to", "prod").stdout
    assert "v0.1.0 -> prod: promoted" in promoted
    assert promoted.count("[PASS]") == 3

    # v0.2.0: without the MLP the champion is the weak baseline, and prod refuses it by rule.
    del params["experiments"]["digits_mlp"]
    project.write_params(params)
    project.run("dvc", "repro", "select@digits")
    project.commit("drop the MLP")
    assert "v0.2.0" in project.registry("register", ARTIFACT).stdout
    refused = project.registry("promote", ARTIFACT, "--to", "prod", check=False)
    assert refused.returncode == 2
    assert "Refused to promote digits-classifier v0.2.0 to prod" in refused.stderr
    for rule in (
        "[FAIL] test_accuracy >= 0.9 for prod",
        "[FAIL] beats the sgd_logistic baseline on digits in test_accuracy: "
        "the champion is the baseline itself (digits_sgd)",
        "[FAIL] beats the prod holder by at least 0 in test_accuracy",
    ):
        assert rule in refused.stderr

    # v0.3.0: the MLP trained longer beats v0.1.0 and takes prod.
    params["experiments"]["digits_mlp"] = {
        "dataset": "digits",
        "model": {"name": "mlp", "units": [64], "dropout": [0.1]},
        "learning_rate": 0.01,
        "epochs": 10,
        "batch_size": 32,
    }
    project.write_params(params)
    project.run("dvc", "repro", "select@digits")
    project.commit("train the MLP longer")
    assert "v0.3.0" in project.registry("register", ARTIFACT).stdout
    card3 = json.loads((project.root / "models/champions/digits/card.json").read_text())
    assert card3["value"] > card1["value"], (card1["value"], card3["value"])
    assert (
        "v0.3.0 -> prod: promoted" in project.registry("promote", ARTIFACT, "--to", "prod").stdout
    )

    # rollback: prod goes back to v0.1.0, and GTO's own reading agrees.
    rolled = project.registry("rollback", ARTIFACT, "--stage", "prod").stdout
    assert rolled.strip() == "digits-classifier prod: v0.3.0 -> v0.1.0"
    shown = project.show()
    gto_versions = project.gto_show(ARTIFACT)
    assert shown["latest"] == project.gto_show()[ARTIFACT]["version"] == "v0.3.0"
    assert shown["stages"]["prod"] == project.gto_show()[ARTIFACT]["stage"]["prod"] == "v0.1.0"
    assert [(v["version"], v["commit"]) for v in shown["versions"]] == [
        (v["version"], v["commit_hexsha"]) for v in gto_versions
    ]
    by_version = {v["version"]: v for v in shown["versions"]}
    assert by_version["v0.1.0"]["metrics"]["test_accuracy"] == card1["value"]
    assert by_version["v0.3.0"]["experiment"] == "digits_mlp"
    table = project.registry("show").stdout
    assert "digits-classifier (digits): latest v0.3.0; staging: -, prod: v0.1.0" in table

    assert_prod_served_from_the_remote(project, tmp_path / "prod-model", card1)


def assert_prod_served_from_the_remote(project: Project, out: Path, card: dict) -> None:
    """`get` from the remote (local cache removed), hash-checked; `load` predicts as scored."""
    shutil.rmtree(project.root / ".dvc" / "cache")
    project.registry("get", ARTIFACT, "--stage", "prod", "-o", str(out))
    model_file = out / "model.keras"
    assert hashlib.md5(model_file.read_bytes()).hexdigest() == card["model_md5"]
    assert json.loads((out / "card.json").read_text()) == card

    model = load(ARTIFACT, stage="prod", root=project.root)
    x_test = np.load(project.root / "data/prepared/digits/x_test.npy")
    y_test = np.load(project.root / "data/prepared/digits/y_test.npy")
    accuracy = float(np.mean(np.argmax(model.predict(x_test, verbose=0), axis=1) == y_test))
    assert accuracy == pytest.approx(card["value"], abs=1e-6)
