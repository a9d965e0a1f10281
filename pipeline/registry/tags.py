"""Git for the registry: running git, creating GTO's tags atomically, and reading them back.

The registry's state is GTO's tag format:

- `<artifact>@vX.Y.Z` on a commit registers a version (the champion in that commit's dvc.lock);
- `<artifact>#<stage>#N` on a version's commit assigns it the stage;
- `<artifact>#<stage>!#N` on a version's commit takes the stage back from it (a rollback).

Registering and promoting write one annotated tag each (a rollback two). `git tag` creates a
tag atomically or fails if the name exists, so two registrations racing end with distinct
versions or one refusal, and a crash leaves either the old registry or the new one. Tag times of
an artifact strictly increase (GTO orders events by tag time, in whole seconds).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from pipeline.registry.errors import RegistryError

MAX_TAG_ATTEMPTS = 20


def git(root: Path, *args: str, strip: bool = True) -> str:
    """Run `git ARGS` in `root` and return its output; a failure is a `RegistryError`."""
    result = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RegistryError(f"`git {' '.join(args)}` failed in {root}: {result.stderr.strip()}")
    return result.stdout.strip() if strip else result.stdout


def tag_times(root: Path, artifact: str) -> dict[str, int]:
    """`{tag name: tagger time}` of every GTO tag of `artifact`."""
    from gto.tag import parse_name

    listing = git(
        root, "for-each-ref", "refs/tags", "--format=%(refname:strip=2) %(taggerdate:unix)"
    )
    times = {}
    for line in listing.splitlines():
        name, _, stamp = line.rpartition(" ")
        parsed = parse_name(name, raise_on_fail=False)
        if parsed and parsed.get("name") == artifact:
            times[name] = int(stamp) if stamp.isdigit() else 0
    return times


def create_tag(root: Path, artifact: str, name: str, commit: str, message: str) -> bool:
    """Create annotated tag `name` on `commit`; False if the name exists (or is being made).

    The tag time is one second after the artifact's latest tag when the clock has not moved
    past it yet, so GTO's order of events is the order they happened.
    """
    stamp = max(int(time.time()), max(tag_times(root, artifact).values(), default=0) + 1)
    env = {**os.environ, "GIT_COMMITTER_DATE": f"{stamp} +0000"}
    result = subprocess.run(
        ["git", "tag", "--annotate", name, "--message", message, commit],
        cwd=root,
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if result.returncode == 0:
        return True
    error = result.stderr.strip()
    if "already exists" in error or "cannot lock ref" in error or "File exists" in error:
        return False
    raise RegistryError(f"`git tag {name}` failed: {error}")


def create_counted_tag(root: Path, artifact: str, prefix: str, commit: str, lines: list) -> str:
    """Create `<prefix>#N` with the next free counter N (GTO's stage-tag format)."""
    from gto.tag import parse_name

    for _ in range(MAX_TAG_ATTEMPTS):
        counters = [parse_name(name).get("counter", 0) for name in tag_times(root, artifact)]
        name = f"{prefix}#{max(counters, default=0) + 1}"
        if create_tag(root, artifact, name, commit, "\n".join(lines)):
            return name
    raise RegistryError(f"Could not create a {prefix} tag: names kept being taken. Retry.")


def holder_names(gto_artifact, stage: str) -> list[str]:
    """The versions that hold `stage` in `gto_artifact` (an artifact of GTO's registry state),
    the current holder first, then the ones before it.

    This is `gto show`'s reading (registered versions, sorted by tag time): a version holds a
    stage while its latest event for that stage is an assignment.
    """
    from gto.constants import VersionSort

    if gto_artifact is None:
        return []
    vstages = gto_artifact.get_vstages(
        registered_only=True, versions_per_stage=-1, sort=VersionSort.Timestamp
    ).get(stage, [])
    return [vstage.version for vstage in vstages]


def stages_held(gto_artifact, version: str) -> set[str]:
    """Every stage `version` of `gto_artifact` was ever assigned (`<artifact>#<stage>#N` tags on
    its commit), whether it holds the stage still or lost it to a newer version or a rollback."""
    if gto_artifact is None:
        return set()
    return {
        stage
        for candidate in gto_artifact.versions
        if candidate.version == version
        for stage, vstage in candidate.stages.items()
        if vstage.assignments
    }


def registration_message(artifact: str, version: str, card: dict, champion_md5: str) -> str:
    """The message of a version tag; `model_md5:` is what `register` compares a new champion to."""
    return "\n".join(
        [
            f"Register {artifact} {version}",
            "",
            f"experiment: {card['experiment']} ({card['model']})",
            f"{card['metric']}: {card['value']:.4f}",
            f"model_md5: {card['model_md5']}",
            f"champion_md5: {champion_md5}",
        ]
    )
