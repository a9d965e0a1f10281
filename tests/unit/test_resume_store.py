"""The resume state on the DVC remote (`runtime.checkpoint_every`): pushed as generations, fetched
into an empty state directory, discarded when the run ends, keyed by the run's fingerprint; a
project without a DVC remote is refused with the setting to change. A real git + DVC repository
with a local directory as its remote."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.core.errors import AtelierError
from pipeline.modeling.resume import Fingerprint
from pipeline.modeling.resume_store import RemoteResumeStore

BIN = Path(sys.executable).parent
RUN = Fingerprint(params="p1", data={"x.npy": "d1"}, code={"pipeline/a.py": "c1"})


def repository(root: Path, remote: Path | None) -> Path:
    root.mkdir()
    commands = [["git", "init", "--quiet"], [str(BIN / "dvc"), "init", "--quiet"]]
    if remote is not None:
        commands.append([str(BIN / "dvc"), "remote", "add", "-d", "storage", str(remote)])
    for command in commands:
        subprocess.run(command, cwd=root, check=True, capture_output=True)
    return root


def state(directory: Path, epoch: int) -> Path:
    """A resume state's files as the train stage lays them out, marked with `epoch`."""
    (directory / "backup").mkdir(parents=True, exist_ok=True)
    (directory / "live" / "plots").mkdir(parents=True, exist_ok=True)
    (directory / "lock").write_text("")
    (directory / "status.json").write_text(json.dumps({"epoch": epoch}))
    (directory / "backup" / "latest.weights.h5").write_bytes(bytes([epoch]) * 64)
    (directory / "live" / "plots" / "loss.tsv").write_text(f"step\tloss\n{epoch - 1}\t0.5\n")
    return directory


def files(directory: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(directory)): path.read_bytes()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def test_a_pushed_state_is_fetched_elsewhere_then_discarded(tmp_path):
    remote = tmp_path / "remote"
    one = repository(tmp_path / "one", remote)
    store = RemoteResumeStore.open(one, "digits_mlp", RUN, every=2)
    source = state(tmp_path / "one-state", 1)
    store.push(source, 1)  # not an epoch to push
    assert not remote.exists()
    store.push(source, 2)
    state(source, 4)
    store.push(source, 4)
    [generation] = [p.name for p in remote.glob("atelier-resume/*/gen-*")]
    assert generation == "gen-00004"  # the older generation removed

    # Another machine: another clone with the same remote, the same run.
    two = repository(tmp_path / "two", remote)
    target = tmp_path / "two-state"
    fetched = RemoteResumeStore.open(two, "digits_mlp", RUN, every=2)
    assert fetched.fetch(target) == 4
    expected = {name: data for name, data in files(source).items() if name != "lock"}
    assert files(target) == expected
    # A directory that already holds a state keeps it.
    assert fetched.fetch(target) is None
    # Another run (another fingerprint) finds nothing.
    other = RemoteResumeStore.open(two, "digits_mlp", Fingerprint(params="p2"), every=2)
    assert other.fetch(tmp_path / "other-state") is None

    fetched.discard()
    assert not list(remote.glob("atelier-resume/*"))
    assert fetched.fetch(tmp_path / "after") is None


def test_an_unreadable_pointer_is_not_used(tmp_path, caplog):
    remote = tmp_path / "remote"
    root = repository(tmp_path / "one", remote)
    store = RemoteResumeStore.open(root, "digits_mlp", RUN, every=1)
    store.push(state(tmp_path / "state", 1), 1)
    [pointer] = remote.glob("atelier-resume/*/latest.json")
    pointer.write_text("{not json")
    assert store.fetch(tmp_path / "fresh") is None
    assert "unreadable" in caplog.text
    assert not (tmp_path / "fresh").exists()


def test_zero_keeps_the_state_local_and_no_remote_is_refused(tmp_path):
    root = repository(tmp_path / "one", None)
    assert RemoteResumeStore.open(root, "digits_mlp", RUN, every=0) is None
    with pytest.raises(AtelierError) as refused:
        RemoteResumeStore.open(root, "digits_mlp", RUN, every=3)
    message = str(refused.value)
    assert "runtime.checkpoint_every is 3" in message
    assert "dvc remote add -d storage" in message and "to 0" in message
