"""A training run's resumable state in `checkpoints/<run>/`: one owner, resumed by the same run.

- `RunLock`: an OS lock on `checkpoints/<run>/lock`, held for the whole training, so that a second
  training of the same run (an orphan left by a killed `dvc`, a second `python -m pipeline train`)
  is refused instead of writing into the first one's state.
- `Fingerprint`: what a resumed run must share with the interrupted one — the params (the
  experiment's, the seed, the fold, the precision policy), the content of the data files it reads
  and the source of the project modules loaded to train it.
- `ResumeState`: the files themselves — Keras' backup, the best checkpoint so far, the history,
  DVCLive's files — and the decision to resume them or to start afresh.

Nothing here imports TensorFlow or Keras at import time.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import logging
import os
import shutil
import sys
import time
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.core.io import atomic_write_bytes, atomic_write_json, read_json
from pipeline.core.runlock import LOCK_NAME

log = logging.getLogger(__name__)

CLASSIFICATION_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy")


# --- what makes two runs the same run -----------------------------------------------------------


@dataclass(frozen=True)
class Fingerprint:
    """A run's params digest, its data files' MD5s and its code modules' SHA-256s."""

    params: str
    data: dict[str, str] = field(default_factory=dict)
    code: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"params": self.params, "data": self.data, "code": self.code}

    @classmethod
    def from_json(cls, payload) -> Fingerprint:
        """Read a stored fingerprint; `ValueError` unless it has exactly the expected shape."""
        if not isinstance(payload, dict) or not isinstance(payload.get("params"), str):
            raise ValueError("no fingerprint of params, data and code")
        parts = {key: payload.get(key) for key in ("data", "code")}
        for key, value in parts.items():
            if not isinstance(value, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in value.items()
            ):
                raise ValueError(f"fingerprint {key!r} is not a mapping of names to digests")
        return cls(params=payload["params"], **parts)

    def differences(self, other: Fingerprint) -> list[str]:
        """The parts that differ, named: `params`, `data (<files>)`, `code (<modules>)`."""
        parts = ["params"] if self.params != other.params else []
        for part in ("data", "code"):
            changed = _changed(getattr(self, part), getattr(other, part))
            if changed:
                parts.append(f"{part} ({changed})")
        return parts


def _changed(mine: dict[str, str], theirs: dict[str, str]) -> str:
    names = sorted(
        name for name in mine.keys() | theirs.keys() if mine.get(name) != theirs.get(name)
    )
    shown = ", ".join(names[:3])
    return shown + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def fingerprint(params: Mapping, data_files: Mapping[str, Path]) -> Fingerprint:
    """The fingerprint of a run: `params` (JSON-able), the data files by name, the code loaded.

    Call it once the modules that train the run are imported: the code part is every
    `pipeline` module in `sys.modules` at that time.
    """
    payload = json.dumps(params, sort_keys=True, default=str).encode()
    return Fingerprint(
        params=hashlib.sha256(payload).hexdigest()[:16],
        data=data_digests(data_files),
        code=code_digests(),
    )


def data_digests(files: Mapping[str, Path]) -> dict[str, str]:
    """MD5 of each file's content, as DVC hashes it (a size and a time say nothing of content)."""
    digests = {}
    for name, path in sorted(files.items()):
        with open(path, "rb") as stream:
            digests[name] = hashlib.file_digest(stream, "md5").hexdigest()
    return digests


def code_digests(package: str = "pipeline") -> dict[str, str]:
    """SHA-256 (16 hex digits) of the source of every loaded module of `package`, by name."""
    digests = {}
    for name, module in sorted(dict(sys.modules).items()):
        if name != package and not name.startswith(f"{package}."):
            continue
        source = getattr(module, "__file__", None)
        if source and source.endswith(".py") and os.path.isfile(source):
            digests[name] = hashlib.sha256(Path(source).read_bytes()).hexdigest()[:16]
    return digests


# --- the state on disk --------------------------------------------------------------------------


class ResumeState:
    """Files under `checkpoints/<run>/` that let a killed run resume; used under its `RunLock`."""

    def __init__(self, directory: Path, keys: tuple[str, ...] = CLASSIFICATION_KEYS):
        self.directory = Path(directory)
        self.keys = keys
        self.backup_dir = self.directory / "backup"
        self.live_dir = self.directory / "live"
        self.best_model_path = self.directory / "best.keras"
        self.best_path = self.directory / "best.json"
        self.history_path = self.directory / "history.csv"
        self.status_path = self.directory / "status.json"
        self.weights_path = self.backup_dir / "latest.weights.h5"
        self.metadata_path = self.backup_dir / "training_metadata.json"
        self.initial_epoch = 0  # epochs finished before this process started
        self._segment_started = time.perf_counter()

    def start(self, fingerprint: Fingerprint, model=None) -> bool:
        """Resume the interrupted run if it is this run and its state loads; else start afresh.

        `model` (compiled, its optimizer built here if need be) is loaded with the backup's
        weights as a check; if they do not load it is set back as it was. A discarded state is
        reported in one log line that says why: which of params, data or code changed, or what
        could not be loaded. Returns whether the run resumes.
        """
        self._segment_started = time.perf_counter()
        if not self._has_state():
            self.start_afresh(fingerprint)
            return False
        reason = self._why_not_resumable(fingerprint, model)
        if reason is None:
            log.info(
                "resuming an interrupted run from %s after epoch %d",
                self.directory,
                self.initial_epoch,
            )
            return True
        log.warning("not resuming from %s: %s; starting afresh", self.directory, reason)
        self.start_afresh(fingerprint)
        return False

    def start_afresh(self, fingerprint: Fingerprint) -> None:
        """Remove every file of the state but the lock; record `fingerprint`."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for entry in self.directory.iterdir():
            if entry.name == LOCK_NAME:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        self.initial_epoch = 0
        atomic_write_json(self.status_path, {"fingerprint": fingerprint.to_json(), "time_s": 0.0})

    def _has_state(self) -> bool:
        return self.directory.is_dir() and any(
            entry.name != LOCK_NAME for entry in self.directory.iterdir()
        )

    def _why_not_resumable(self, fingerprint: Fingerprint, model) -> str | None:
        try:
            stored = Fingerprint.from_json(read_json(self.status_path)["fingerprint"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return f"{self.status_path.name} cannot be read ({_brief(exc)})"
        differences = fingerprint.differences(stored)
        if differences:
            return f"{', '.join(differences)} changed since it was saved"
        if not self.backup_dir.exists():
            return "no epoch of it had finished"
        try:
            epochs = self._check_files()
        except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile) as exc:
            return f"its files cannot be loaded ({_brief(exc)})"
        if model is not None:
            problem = _load_backup(model, self.weights_path)
            if problem:
                return f"its backup does not load into the model ({problem})"
        try:
            self._trim_live(epochs)
        except (OSError, ValueError) as exc:
            return f"its DVCLive files cannot be read ({_brief(exc)})"
        self.initial_epoch = epochs
        return None

    def _check_files(self) -> int:
        """Check that every file parses and agrees with the backup; return its epochs."""
        float(read_json(self.status_path).get("time_s", 0.0))
        epochs = read_json(self.metadata_path)["epoch"]
        if not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"the backup's epoch is {epochs!r}")
        if not self.weights_path.is_file():
            raise FileNotFoundError(f"{self.weights_path.name} is missing")
        history = self.history()
        recorded = [int(row["epoch"]) for row in history]
        if recorded != list(range(1, len(recorded) + 1)) or len(recorded) < epochs:
            raise ValueError(f"history.csv has epochs {recorded}, the backup {epochs}")
        for row in history:
            for key in self.keys:
                float(row.get(key) or "nan")  # a figure, or empty (a key the epoch lacked)
        if self.best_path.exists():
            best = read_json(self.best_path)
            int(best["epoch"])
            float(best["value"])
            with zipfile.ZipFile(self.best_model_path) as archive:
                broken = archive.testzip()
            if broken:
                raise ValueError(f"best.keras: {broken} is corrupt")
        if (self.live_dir / "metrics.json").exists():
            read_json(self.live_dir / "metrics.json")
        return epochs

    def _trim_live(self, epochs: int) -> None:
        """Drop DVCLive's rows of the epochs that will be trained again.

        A kill can fall between DVCLive's write of an epoch and the backup's, so the resumed
        run would log that epoch twice.
        """
        for path in sorted((self.live_dir / "plots").rglob("*.tsv")):
            lines = path.read_text().splitlines(keepends=True)
            kept = lines[:1] + [line for line in lines[1:] if _step_below(line, epochs)]
            if kept != lines:
                atomic_write_bytes(path, "".join(kept).encode())

    def epoch_done(self, row: dict) -> None:
        """Record one finished epoch's figures and the training time spent so far."""
        rows = [r for r in self.history() if int(r["epoch"]) < row["epoch"]] + [row]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=["epoch", *self.keys])
        writer.writeheader()
        for item in rows:
            writer.writerow({key: item.get(key, "") for key in ["epoch", *self.keys]})
        atomic_write_bytes(self.history_path, buffer.getvalue().encode())
        status = read_json(self.status_path)
        now = time.perf_counter()
        status["time_s"] = status.get("time_s", 0.0) + (now - self._segment_started)
        self._segment_started = now
        atomic_write_json(self.status_path, status)

    def train_time_s(self) -> float:
        return float(read_json(self.status_path).get("time_s", 0.0))

    def best(self) -> dict | None:
        return read_json(self.best_path) if self.best_path.is_file() else None

    def history(self) -> list[dict]:
        if not self.history_path.is_file():
            return []
        with open(self.history_path, newline="") as stream:
            return list(csv.DictReader(stream))

    def finish(self) -> None:
        """Remove the state (the lock file too: its holder releases it right after)."""
        shutil.rmtree(self.directory, ignore_errors=True)
        with contextlib.suppress(OSError):
            self.directory.parent.rmdir()  # checkpoints/ when no other run is in progress


def _load_backup(model, weights_path: Path) -> str | None:
    """Load the backup's weights into `model`; on failure set it back and say why."""
    variables = list(model.weights)
    if model.optimizer is not None:
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)  # as BackupAndRestore does
        variables += list(model.optimizer.variables)
    initial = [variable.numpy() for variable in variables]
    try:
        model.load_weights(weights_path)
    except Exception as exc:  # a file of another model raises ValueError, a damaged one OSError…
        for variable, value in zip(variables, initial, strict=True):
            variable.assign(value)
        return _brief(exc)
    return None


def _step_below(line: str, epochs: int) -> bool:
    step = line.split("\t", 1)[0]
    return line.endswith("\n") and step.isdigit() and int(step) < epochs


def _brief(exc: BaseException) -> str:
    """`Type: first line of the message`, short enough for one log line."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__
