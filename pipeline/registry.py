"""The model registry: versions and stages of each dataset's champion, as GTO git tags.

Nothing here keeps state of its own. DVC stores the files (`models/champions/<dataset>/`, an
output of `select@<dataset>` declared under `artifacts:` in `dvc.yaml`) and records their hash
in `dvc.lock`; GTO's tag format records the lifecycle, so `gto show` and `registry show` read the
same registry:

- `<artifact>@vX.Y.Z` on a commit registers a version (the champion in that commit's dvc.lock);
- `<artifact>#<stage>#N` on a version's commit assigns it the stage;
- `<artifact>#<stage>!#N` on a version's commit takes the stage back from it (a rollback).

Registering and promoting write one annotated tag each (a rollback two), and `git tag` creates
a tag atomically or fails if the name exists, so two registrations racing end with distinct
versions or one refusal, and a crash leaves either the old registry or the new one. Tag times of
an artifact strictly increase (GTO orders events by tag time, in whole seconds).

The stage holder is what GTO shows: of the versions whose latest event for the stage is an
assignment, the most recently assigned one. A rollback unassigns it, which hands the stage back
to the version that held it before, and assigns that one again so that DVC's own reading of the
tags (`dvc artifacts get REPO NAME --stage prod`: the stage's latest tag) agrees.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import yaml
from gto.constants import VersionSort
from gto.versions import SemVer

from pipeline.core.errors import AtelierError
from pipeline.params import Params, RegistryParams, load_params
from pipeline.stages.select import BASELINE_FILE, CARD_FILE, CHAMPIONS_DIR

log = logging.getLogger(__name__)

STAGES = ("staging", "prod")
PRIMARY_METRICS = ("test_accuracy", "macro_f1", "test_loss")  # shown by `show`
FIRST_VERSION = (0, 1, 0)
MAX_TAG_ATTEMPTS = 20
DVC_LOCK_ATTEMPTS = 10
_T = TypeVar("_T")


class RegistryError(AtelierError):
    """The registry refused a command; the message says why and what to do."""


class NothingToRegister(RegistryError):
    """The champion at HEAD is already the latest version (or HEAD is already registered)."""


class PromotionRefused(RegistryError):
    """A promotion rule failed; `promotion` holds every rule with its figure."""

    def __init__(self, message: str, promotion: Promotion):
        super().__init__(message)
        self.promotion = promotion


@dataclass(frozen=True)
class Version:
    """One registered version: the tag `<artifact>@<version>` on `commit`."""

    artifact: str
    version: str
    commit: str
    created_at: datetime
    tag: str
    author: str
    message: str

    @property
    def model_md5(self) -> str | None:
        match = re.search(r"^model_md5: ([0-9a-f]{32})$", self.message, re.MULTILINE)
        return match.group(1) if match else None


@dataclass(frozen=True)
class Rule:
    """One promotion rule: what it checks, the figures it compared, and whether it passed."""

    name: str
    figure: str
    passed: bool

    def __str__(self) -> str:
        return f"[{'PASS' if self.passed else 'FAIL'}] {self.name}: {self.figure}"


@dataclass(frozen=True)
class Promotion:
    artifact: str
    version: str
    stage: str
    rules: list[Rule]
    promoted: bool
    forced: bool = False
    tag: str | None = None
    previous: str | None = None

    @property
    def failed(self) -> list[Rule]:
        return [rule for rule in self.rules if not rule.passed]


@dataclass(frozen=True)
class Rollback:
    artifact: str
    stage: str
    from_version: str
    to_version: str
    tag: str


@dataclass
class Release:
    """What `release` did: the version it registered (or found) and the stages it reached."""

    artifact: str
    version: str
    registered: bool
    promotions: list[Promotion] = field(default_factory=list)
    stopped_by: Promotion | None = None


# --- pure rules ---------------------------------------------------------------------------------


def parse_version(text: str) -> tuple[int, int, int]:
    """`v1.2.3` or `1.2.3` → (1, 2, 3); anything else is a `RegistryError`.

    A pre-release or build suffix (`v1.2.3-rc.1`, which `gto register` accepts) is ignored.
    """
    match = re.fullmatch(
        r"v?(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:[-+][0-9A-Za-z.+-]+)?", text.strip()
    )
    if not match:
        raise RegistryError(f"{text!r} is not a version: write it as v0.2.0 (major.minor.patch).")
    return int(match[1]), int(match[2]), int(match[3])


def format_version(parts: tuple[int, int, int]) -> str:
    return "v{}.{}.{}".format(*parts)


def next_version(latest: str | None) -> str:
    """The version a new registration gets: v0.1.0 first, then the next minor version."""
    if latest is None:
        return format_version(FIRST_VERSION)
    major, minor, _ = parse_version(latest)
    return format_version((major, minor + 1, 0))


def check_rules(
    card: dict,
    *,
    stage: str,
    rules: RegistryParams,
    holder_card: dict | None = None,
    holder_version: str | None = None,
) -> list[Rule]:
    """Evaluate `params.yaml`'s registry rules for promoting the version described by `card`.

    Args:
        card: the candidate's `card.json` (its `metrics` and the `baseline` it was selected with).
        stage: the stage it would be assigned.
        rules: `params.registry`.
        holder_card: the card of the version holding `stage` now, if any.
        holder_version: that version's name, for the message.

    Returns:
        One `Rule` per threshold of the stage, then the baseline rule (when required), then the
        rule against the current holder; promotion is allowed when all pass.
    """
    metrics = card.get("metrics", {})
    result = []
    for metric, threshold in rules.stages.get(stage, {}).items():
        value = metrics.get(metric)
        lower = rules.lower_is_better(metric)
        name = f"{metric} {'<=' if lower else '>='} {threshold:g} for {stage}"
        if not _is_number(value):
            result.append(Rule(name, f"{metric} is not in the version's metrics", False))
            continue
        passed = value <= threshold if lower else value >= threshold
        result.append(Rule(name, f"{metric} = {value:.4f}", passed))

    metric = rules.metric
    lower = rules.lower_is_better()
    value = metrics.get(metric)
    if rules.require_beat_baseline:
        result.append(_baseline_rule(card, metric, value, lower))
    name = f"beats the {stage} holder by at least {rules.min_improvement:g} in {metric}"
    if holder_card is None:
        result.append(Rule(name, f"no version holds {stage} yet", True))
    else:
        held = holder_card.get("metrics", {}).get(metric)
        if not (_is_number(value) and _is_number(held)):
            result.append(
                Rule(name, f"{metric} missing from this or {holder_version}'s card", False)
            )
        else:
            gain = held - value if lower else value - held
            result.append(
                Rule(
                    name,
                    f"{value:.4f} vs {held:.4f} of {holder_version} ({gain:+.4f})",
                    gain >= rules.min_improvement,
                )
            )
    return result


def _baseline_rule(card: dict, metric: str, value: Any, lower: bool) -> Rule:
    baseline = card.get("baseline")
    name = f"beats the sgd_logistic baseline on {card.get('dataset', 'its dataset')} in {metric}"
    if not baseline:
        return Rule(name, "no sgd_logistic experiment on this dataset to compare with", False)
    if baseline.get("experiment") == card.get("experiment"):
        return Rule(name, f"the champion is the baseline itself ({baseline['experiment']})", False)
    base_value = baseline.get("metrics", {}).get(metric)
    if not (_is_number(value) and _is_number(base_value)):
        return Rule(name, f"{metric} missing from the card or the baseline's metrics", False)
    passed = value < base_value if lower else value > base_value
    return Rule(name, f"{value:.4f} vs {base_value:.4f} ({baseline['experiment']})", passed)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def tree_md5(files: dict[str, str]) -> str:
    """DVC's hash of a directory, from `{relative path: md5}` of its files (`<md5>.dir`)."""
    listing = [{"md5": md5, "relpath": path} for path, md5 in sorted(files.items())]
    return hashlib.md5(json.dumps(listing, sort_keys=True).encode("utf-8")).hexdigest() + ".dir"


# --- the registry -------------------------------------------------------------------------------


class Registry:
    """The registry of the git + DVC repository at `root`, with the rules of its params.yaml."""

    def __init__(self, root: Path | str = Path("."), params: Params | None = None):
        self.root = Path(root).resolve()
        self.params = params if params is not None else load_params(self.root / "params.yaml")

    # --- names ----------------------------------------------------------------------------------

    @property
    def artifacts(self) -> dict[str, str]:
        """`{artifact name: dataset}` for every dataset in params.yaml data.datasets."""
        registry = self.params.registry
        return {registry.artifact_name(ds): ds for ds in self.params.data.datasets}

    def dataset_of(self, artifact: str) -> str:
        try:
            return self.artifacts[artifact]
        except KeyError:
            raise RegistryError(
                f"Unknown artifact {artifact!r}: this project's artifacts are "
                f"{', '.join(sorted(self.artifacts))} (params.yaml registry.artifacts, one per "
                "dataset in data.datasets)."
            ) from None

    def champion_path(self, artifact: str) -> str:
        return f"{CHAMPIONS_DIR.as_posix()}/{self.dataset_of(artifact)}"

    # --- reading the registry -------------------------------------------------------------------

    def versions(self, artifact: str) -> list[Version]:
        """Registered (and not deregistered) versions of `artifact`, oldest version first."""
        self.dataset_of(artifact)
        gto_artifact = self._gto_state().artifacts.get(artifact)
        if gto_artifact is None:
            return []
        result = []
        for version in gto_artifact.versions:
            if not (version.is_registered and version.is_active):
                continue
            registration = version.registrations[-1]
            result.append(
                Version(
                    artifact=artifact,
                    version=version.version,
                    commit=version.commit_hexsha,
                    created_at=registration.created_at,
                    tag=registration.tag,
                    author=registration.author,
                    message=registration.message,
                )
            )
        return sorted(result, key=lambda v: SemVer(v.version))

    def find_version(self, artifact: str, version: str) -> Version:
        parse_version(version)
        wanted = version if version.startswith("v") else f"v{version}"
        versions = self.versions(artifact)
        for candidate in versions:
            if candidate.version == wanted:
                return candidate
        known = ", ".join(v.version for v in versions) or "none yet"
        raise RegistryError(
            f"{artifact} has no version {wanted} (registered: {known}). "
            f"See `python -m pipeline registry show {artifact}`."
        )

    def latest(self, artifact: str) -> Version | None:
        versions = self.versions(artifact)
        return versions[-1] if versions else None

    def holders(self, artifact: str, stage: str) -> list[Version]:
        """Versions that hold `stage`, the current holder first, then the ones before it.

        This is GTO's own reading of the tags (`gto show`, sorted by timestamp): a version
        holds a stage while its latest event for that stage is an assignment.
        """
        _check_stage(stage)
        self.dataset_of(artifact)
        gto_artifact = self._gto_state().artifacts.get(artifact)
        if gto_artifact is None:
            return []
        vstages = gto_artifact.get_vstages(
            registered_only=True, versions_per_stage=-1, sort=VersionSort.Timestamp
        ).get(stage, [])
        by_name = {v.version: v for v in self.versions(artifact)}
        return [by_name[vstage.version] for vstage in vstages if vstage.version in by_name]

    def holder(self, artifact: str, stage: str) -> Version | None:
        holders = self.holders(artifact, stage)
        return holders[0] if holders else None

    def card(self, version: Version) -> dict:
        """The `card.json` of `version`, read by DVC at the version's commit."""
        path = f"{self.champion_path(version.artifact)}/{CARD_FILE}"
        with self._dvc_fs(version.commit) as fs:
            try:
                return json.loads(fs.read_bytes(path))
            except Exception as exc:  # DVC raises several kinds for a missing object
                raise RegistryError(
                    f"Cannot read {path} of {version.artifact} {version.version} (commit "
                    f"{version.commit[:7]}): {exc}. Run `dvc pull` or configure the DVC remote "
                    "that holds it."
                ) from None

    def show(self, artifact: str | None = None) -> dict:
        """The registry as data: per artifact, its latest version, stage holders, and versions.

        Each version lists its commit, date, the stages it holds and the primary figures of
        its card (experiment, model, `PRIMARY_METRICS` and the ranking metric).
        """
        names = [artifact] if artifact else sorted(self.artifacts)
        primary = {*PRIMARY_METRICS, self.params.registry.metric, "test_mae", "test_rmse"}
        result = {}
        for name in names:
            versions = self.versions(name)
            stages = {stage: self.holder(name, stage) for stage in STAGES}
            rows = []
            for version in reversed(versions):
                try:
                    card = self.card(version)
                except RegistryError as exc:
                    log.warning("%s", exc)
                    card = {}
                rows.append(
                    {
                        "version": version.version,
                        "commit": version.commit,
                        "created_at": version.created_at.astimezone(UTC).isoformat(),
                        "author": version.author,
                        "stages": [
                            s for s, v in stages.items() if v and v.version == version.version
                        ],
                        "experiment": card.get("experiment"),
                        "model": card.get("model"),
                        "metric": card.get("metric"),
                        "value": card.get("value"),
                        "metrics": {
                            k: v
                            for k, v in card.get("metrics", {}).items()
                            if k in primary and _is_number(v)
                        },
                    }
                )
            result[name] = {
                "dataset": self.artifacts[name],
                "latest": versions[-1].version if versions else None,
                "stages": {stage: v.version if v else None for stage, v in stages.items()},
                "versions": rows,
            }
        return result

    # --- changing the registry ------------------------------------------------------------------

    def register(self, artifact: str) -> Version:
        """Register the champion at HEAD as the next version of `artifact`.

        Refuses (`RegistryError`) when the working tree has uncommitted changes, when
        `dvc status` shows the champion's pipeline out of date with dvc.lock, or (as
        `NothingToRegister`) when HEAD is registered already or its champion model is the
        latest version's. Pushes the champion to the default DVC remote when one is set, so
        the version can be fetched elsewhere, then creates the tag; if another process took
        the version name first, the state is read again and the next name tried.
        """
        dataset = self.dataset_of(artifact)
        self._require_clean_tree()
        self._require_pipeline_current(dataset)
        head = self._git("rev-parse", "HEAD")
        champion_md5 = self._lock_md5(head, artifact)
        if champion_md5 is None:
            raise RegistryError(
                f"dvc.lock at HEAD records no champion for {dataset!r}: run "
                f"`dvc repro select@{dataset}`, commit dvc.lock, then register."
            )
        card = json.loads((self.root / self.champion_path(artifact) / CARD_FILE).read_text())
        self._require_new_champion(artifact, head, card, self.versions(artifact))
        self._push(dataset)
        for _ in range(MAX_TAG_ATTEMPTS):
            # Read again on every attempt: a racing process may have registered meanwhile.
            versions = self.versions(artifact)
            self._require_new_champion(artifact, head, card, versions)
            latest = versions[-1] if versions else None
            candidate = next_version(latest.version if latest else None)
            tag = f"{artifact}@{candidate}"
            message = "\n".join(
                [
                    f"Register {artifact} {candidate}",
                    "",
                    f"experiment: {card['experiment']} ({card['model']})",
                    f"{card['metric']}: {card['value']:.4f}",
                    f"model_md5: {card['model_md5']}",
                    f"champion_md5: {champion_md5}",
                ]
            )
            if self._create_tag(artifact, tag, head, message):
                log.info("Registered %s %s at %s", artifact, candidate, head[:7])
                return self.find_version(artifact, candidate)
            log.info("%s was taken by another process; reading the registry again", tag)
        raise RegistryError(
            f"Could not register {artifact}: {MAX_TAG_ATTEMPTS} version names in a row were "
            "taken by other processes. Try again."
        )

    def _require_new_champion(
        self, artifact: str, head: str, card: dict, versions: list[Version]
    ) -> None:
        at_head = [v.version for v in versions if v.commit == head]
        if at_head:
            raise NothingToRegister(
                f"HEAD ({head[:7]}) is already registered as {artifact} {at_head[-1]}: "
                "nothing to register. Commit a new champion first."
            )
        latest = versions[-1] if versions else None
        if latest is not None and self._model_md5(latest) == card["model_md5"]:
            raise NothingToRegister(
                f"The champion at HEAD ({card['experiment']}, model md5 "
                f"{card['model_md5'][:12]}) is the model of {artifact} {latest.version}: "
                "nothing changed, so no version was created."
            )

    def promote(
        self, artifact: str, stage: str, *, version: str | None = None, force: bool = False
    ) -> Promotion:
        """Assign `stage` to `version` (default: the latest) if it passes the rules.

        Raises:
            PromotionRefused: a rule failed and `force` is false; its message lists the rules.
            RegistryError: unknown artifact, stage or version, or the version holds the
                stage already.
        """
        _check_stage(stage)
        target = self.find_version(artifact, version) if version else self.latest(artifact)
        if target is None:
            raise RegistryError(
                f"{artifact} has no versions yet: run `python -m pipeline registry register "
                f"{artifact}` first."
            )
        holder = self.holder(artifact, stage)
        if holder is not None and holder.version == target.version:
            raise RegistryError(f"{artifact} {target.version} already holds {stage}.")
        rules = check_rules(
            self.card(target),
            stage=stage,
            rules=self.params.registry.for_dataset(self.dataset_of(artifact)),
            holder_card=self.card(holder) if holder else None,
            holder_version=holder.version if holder else None,
        )
        passed = all(rule.passed for rule in rules)
        promotion = Promotion(
            artifact=artifact,
            version=target.version,
            stage=stage,
            rules=rules,
            promoted=False,
            forced=force,
            previous=holder.version if holder else None,
        )
        if not passed and not force:
            failed = "; ".join(rule.name for rule in promotion.failed)
            raise PromotionRefused(
                f"Refused to promote {artifact} {target.version} to {stage}: failed rule(s): "
                f"{failed}.\n"
                + "\n".join(f"  {rule}" for rule in rules)
                + "\nRules are in params.yaml `registry:`; --force promotes anyway and is "
                "recorded in the tag.",
                promotion,
            )
        lines = [f"Promote {artifact} {target.version} to {stage}", ""]
        lines += [str(rule) for rule in rules]
        if force:
            overridden = ", ".join(rule.name for rule in promotion.failed) or "none"
            lines += ["", f"forced: true (--force; failing rules overridden: {overridden})"]
        if holder is not None:
            lines.append(f"previous: {holder.version}")
        tag = self._create_counted_tag(artifact, f"{artifact}#{stage}", target.commit, lines)
        log.info("%s %s now holds %s (%s)", artifact, target.version, stage, tag)
        return replace(promotion, promoted=True, tag=tag)

    def release(self, artifact: str) -> Release:
        """Register the champion at HEAD if it changed, then promote it as far as rules allow.

        Stages are tried in order (staging, then prod); the first refusal stops the climb.
        Refusals are reported in the result, not raised: this is what a scheduled flow runs.
        """
        try:
            version = self.register(artifact)
            registered = True
        except NothingToRegister as exc:
            log.info("%s", exc)
            head = self._git("rev-parse", "HEAD")
            versions = self.versions(artifact)
            at_head = [v for v in versions if v.commit == head]
            version = (at_head or versions)[-1]  # NothingToRegister means one exists
            registered = False
        release = Release(artifact=artifact, version=version.version, registered=registered)
        for stage in STAGES:
            holder = self.holder(artifact, stage)
            if holder is not None and holder.version == version.version:
                continue
            try:
                release.promotions.append(self.promote(artifact, stage, version=version.version))
            except PromotionRefused as exc:
                release.stopped_by = exc.promotion
                break
        return release

    def rollback(self, artifact: str, stage: str) -> Rollback:
        """Give `stage` back to the version that held it before the current holder.

        Two tags: `<artifact>#<stage>!#N` on the current holder's commit takes the stage from
        it, so GTO reads the previous holder as the holder again (and a second rollback goes
        one further back); then `<artifact>#<stage>#N+1` on the previous holder's commit makes
        it the stage's latest assignment, which is what `dvc artifacts get --stage` reads.
        After a crash between the two, `registry show` and `gto show` already show the
        rollback done; only `dvc artifacts get --stage` still reads the newer version.
        """
        holders = self.holders(artifact, stage)
        if not holders:
            raise RegistryError(f"No version of {artifact} holds {stage}: nothing to roll back.")
        if len(holders) < 2:
            raise RegistryError(
                f"{artifact} {holders[0].version} is the only version that has held {stage}: "
                "there is no earlier version to give the stage back to."
            )
        current, previous = holders[0], holders[1]
        lines = [f"Roll back {artifact} {stage}: {current.version} -> {previous.version}"]
        self._create_counted_tag(artifact, f"{artifact}#{stage}!", current.commit, lines)
        lines += ["", f"rollback: {current.version} -> {previous.version}"]
        tag = self._create_counted_tag(artifact, f"{artifact}#{stage}", previous.commit, lines)
        log.info(
            "%s %s rolled back from %s to %s", artifact, stage, current.version, previous.version
        )
        return Rollback(artifact, stage, current.version, previous.version, tag)

    # --- fetching models ------------------------------------------------------------------------

    def resolve(
        self, artifact: str, *, stage: str | None = None, version: str | None = None
    ) -> Version:
        """The version named by `version`, or the holder of `stage`, or else the latest."""
        if stage and version:
            raise RegistryError("Give a stage or a version, not both.")
        if version:
            return self.find_version(artifact, version)
        if stage:
            _check_stage(stage)
            holder = self.holder(artifact, stage)
            if holder is None:
                raise RegistryError(
                    f"No version of {artifact} holds {stage}: promote one with "
                    f"`python -m pipeline registry promote {artifact} --to {stage}`."
                )
            return holder
        latest = self.latest(artifact)
        if latest is None:
            raise RegistryError(f"{artifact} has no versions yet.")
        return latest

    def get(
        self,
        artifact: str,
        out: Path | str,
        *,
        stage: str | None = None,
        version: str | None = None,
    ) -> Path:
        """Write the model file and card.json of a version into directory `out`.

        The files come from DVC (the local cache, else the default remote) as of the version's
        commit, and their hash must equal the one dvc.lock recorded at that commit; otherwise
        nothing is written and `RegistryError` is raised. Returns the model file's path.
        """
        target = self.resolve(artifact, stage=stage, version=version)
        expected = self._lock_md5(target.commit, artifact)
        if expected is None:
            raise RegistryError(
                f"dvc.lock at {target.commit[:7]} ({artifact} {target.version}) records no "
                f"output {self.champion_path(artifact)}."
            )
        prefix = self.champion_path(artifact)
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".registry-get-", dir=out))
        try:
            hashes = {}
            with self._dvc_fs(target.commit) as fs:
                try:
                    files = sorted(fs.find(prefix))
                    for path in files:
                        relative = path[len(prefix) :].lstrip("/")
                        hashes[relative] = _copy_hashing(fs, path, staging / relative)
                except RegistryError:
                    raise
                except Exception as exc:
                    raise RegistryError(
                        f"Cannot fetch {prefix} of {artifact} {target.version} (commit "
                        f"{target.commit[:7]}) from the DVC cache or remote: {exc}. Configure "
                        "the remote it was pushed to (`dvc remote add -d ...`)."
                    ) from None
            actual = tree_md5(hashes)
            if actual != expected:
                raise RegistryError(
                    f"{artifact} {target.version}: the fetched files hash to {actual}, but "
                    f"dvc.lock at {target.commit[:7]} records {expected}. The cache or remote "
                    "is corrupt; nothing was written."
                )
            card = json.loads((staging / CARD_FILE).read_text())
            model_name = card["model_file"]
            for name in (model_name, CARD_FILE):
                (staging / name).replace(out / name)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        log.info("Wrote %s %s (%s) to %s", artifact, target.version, model_name, out)
        return out / model_name

    # --- git, GTO and DVC -----------------------------------------------------------------------

    def _git(self, *args: str, strip: bool = True) -> str:
        result = subprocess.run(
            ["git", *args], cwd=self.root, capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            raise RegistryError(
                f"`git {' '.join(args)}` failed in {self.root}: {result.stderr.strip()}"
            )
        return result.stdout.strip() if strip else result.stdout

    def _gto_state(self):
        from gto.registry import GitRegistry

        with GitRegistry.from_url(str(self.root)) as registry:
            return registry.get_state()

    def _require_clean_tree(self) -> None:
        changes = self._git("status", "--porcelain", strip=False).splitlines()
        if changes:
            listed = ", ".join(line[3:] for line in changes[:5])
            more = f" and {len(changes) - 5} more" if len(changes) > 5 else ""
            raise RegistryError(
                f"The git working tree has uncommitted changes ({listed}{more}): a version must "
                "be a commit. Commit (or stash) them, then register."
            )

    def _require_pipeline_current(self, dataset: str) -> None:
        from dvc.repo import Repo

        target = f"select@{dataset}"

        def status() -> dict:
            with Repo(str(self.root)) as repo:
                return repo.status(targets=[self._stage_target(target)], with_deps=True)

        try:
            changed = _retry_dvc_lock(status)
        except RegistryError:
            raise
        except Exception as exc:
            raise RegistryError(f"`dvc status {target} --with-deps` failed: {exc}") from None
        if changed:
            stages = ", ".join(sorted(key.rpartition(":")[2] for key in changed))
            raise RegistryError(
                f"dvc.lock is out of date with the workspace for {stages}: run "
                f"`dvc repro {target}`, commit dvc.lock, then register."
            )

    def _push(self, dataset: str) -> None:
        from dvc.repo import Repo

        def push() -> bool:
            with Repo(str(self.root)) as repo:
                if not repo.config["core"].get("remote"):
                    return False
                repo.push(targets=[self._stage_target(f"select@{dataset}")])
                return True

        try:
            pushed = _retry_dvc_lock(push)
        except RegistryError:
            raise
        except Exception as exc:
            raise RegistryError(
                f"`dvc push select@{dataset}` failed: {exc}. No version was created."
            ) from None
        if not pushed:
            log.warning(
                "No default DVC remote: the champion of %s stays in this repository's cache "
                "only (`dvc remote add -d NAME URL` makes versions fetchable elsewhere).",
                dataset,
            )

    def _stage_target(self, stage: str) -> str:
        # DVC resolves a bare stage name against the current directory, not the repo's root.
        return f"{self.root / 'dvc.yaml'}:{stage}"

    def _dvc_fs(self, commit: str):
        from dvc.api import DVCFileSystem

        return _ClosingFS(DVCFileSystem(str(self.root), rev=commit))

    def _lock_md5(self, commit: str, artifact: str) -> str | None:
        """The md5 dvc.lock at `commit` records for the champion directory of `artifact`."""
        try:
            text = self._git("show", f"{commit}:dvc.lock")
        except RegistryError:
            return None
        stage = (
            (yaml.safe_load(text) or {})
            .get("stages", {})
            .get(f"select@{self.dataset_of(artifact)}", {})
        )
        path = self.champion_path(artifact)
        for out in stage.get("outs", []):
            if out.get("path") == path:
                return out.get("md5")
        return None

    def _model_md5(self, version: Version) -> str | None:
        return version.model_md5 or self.card(version).get("model_md5")

    def _tag_times(self, artifact: str) -> dict[str, int]:
        from gto.tag import parse_name

        listing = self._git(
            "for-each-ref", "refs/tags", "--format=%(refname:strip=2) %(taggerdate:unix)"
        )
        times = {}
        for line in listing.splitlines():
            name, _, stamp = line.rpartition(" ")
            parsed = parse_name(name, raise_on_fail=False)
            if parsed and parsed.get("name") == artifact:
                times[name] = int(stamp) if stamp.isdigit() else 0
        return times

    def _create_tag(self, artifact: str, name: str, commit: str, message: str) -> bool:
        """Create annotated tag `name` on `commit`; False if the name exists (or is being made).

        The tag time is one second after the artifact's latest tag when the clock has not
        moved past it yet, so GTO's order of events is the order they happened.
        """
        stamp = max(int(time.time()), max(self._tag_times(artifact).values(), default=0) + 1)
        env = {**os.environ, "GIT_COMMITTER_DATE": f"{stamp} +0000"}
        result = subprocess.run(
            ["git", "tag", "--annotate", name, "--message", message, commit],
            cwd=self.root,
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

    def _create_counted_tag(self, artifact: str, prefix: str, commit: str, lines: list) -> str:
        """Create `<prefix>#N` with the next free counter N (GTO's stage-tag format)."""
        from gto.tag import parse_name

        for _ in range(MAX_TAG_ATTEMPTS):
            counters = [parse_name(name).get("counter", 0) for name in self._tag_times(artifact)]
            name = f"{prefix}#{max(counters, default=0) + 1}"
            if self._create_tag(artifact, name, commit, "\n".join(lines)):
                return name
        raise RegistryError(f"Could not create a {prefix} tag: names kept being taken. Retry.")


class _ClosingFS:
    """Context manager that closes a `DVCFileSystem` (and the repository it opened)."""

    def __init__(self, fs):
        self.fs = fs

    def __enter__(self):
        return self.fs

    def __exit__(self, *exc_info) -> None:
        close = getattr(self.fs, "close", None)
        if close is not None:
            close()


def _copy_hashing(fs, path: str, target: Path) -> str:
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.md5()
    with fs.open(path, "rb") as source, open(target, "wb") as sink:
        for block in iter(lambda: source.read(1 << 20), b""):
            digest.update(block)
            sink.write(block)
    return digest.hexdigest()


def _retry_dvc_lock(call: Callable[[], _T]) -> _T:
    """Run `call`, retrying while another DVC process holds the repository lock."""
    from dvc.lock import LockError

    for attempt in range(DVC_LOCK_ATTEMPTS):
        try:
            return call()
        except LockError:
            if attempt == DVC_LOCK_ATTEMPTS - 1:
                raise RegistryError(
                    "Another DVC process kept the repository locked (.dvc/tmp/lock): wait for "
                    "it to finish, then try again."
                ) from None
            log.info("DVC repository locked by another process; retrying")
    raise AssertionError("unreachable")


def _check_stage(stage: str) -> None:
    if stage not in STAGES:
        raise RegistryError(f"Unknown stage {stage!r}: stages are {', '.join(STAGES)}.")


def load(
    artifact: str,
    stage: str | None = "prod",
    *,
    version: str | None = None,
    root: Path | str = Path("."),
):
    """Load a registered model: `load("fashion-mnist-classifier", stage="prod")`.

    Fetches the version's files as `Registry.get` does (hash-verified) and returns the Keras
    model loaded with `safe_mode=True` (no arbitrary code from the file), or a
    `LinearPredictor` when the champion is the scikit-learn baseline.
    """
    registry = Registry(root)
    with tempfile.TemporaryDirectory(prefix="atelier-load-") as tmp:
        path = registry.get(artifact, tmp, stage=None if version else stage, version=version)
        if path.name == BASELINE_FILE:
            from pipeline.modeling.models import LinearPredictor

            return LinearPredictor.load(path)
        import keras

        return keras.saving.load_model(path, safe_mode=True)


# --- text for people ----------------------------------------------------------------------------


def format_promotion(promotion: Promotion) -> str:
    verdict = "promoted" if promotion.promoted else "refused"
    forced = " (forced)" if promotion.forced and promotion.failed else ""
    lines = [
        f"{promotion.artifact} {promotion.version} -> {promotion.stage}: {verdict}{forced}"
        + (f" [{promotion.tag}]" if promotion.tag else "")
    ]
    lines += [f"  {rule}" for rule in promotion.rules]
    return "\n".join(lines)


def format_release(release: Release) -> str:
    action = "registered" if release.registered else "no new version; latest is"
    lines = [f"{release.artifact}: {action} {release.version}"]
    lines += [format_promotion(promotion) for promotion in release.promotions]
    if release.stopped_by is not None:
        lines.append(format_promotion(release.stopped_by))
    return "\n".join(lines)


def format_show(state: dict) -> str:
    """`Registry.show()` as one table per artifact."""
    blocks = []
    for name, entry in state.items():
        stages = ", ".join(f"{stage}: {held or '-'}" for stage, held in entry["stages"].items())
        header = f"{name} ({entry['dataset']}): latest {entry['latest'] or '-'}; {stages}"
        metric_names = sorted({m for row in entry["versions"] for m in row["metrics"]})
        columns = ["version", "stages", "commit", "created (UTC)", "experiment", "model"]
        rows = [columns + metric_names]
        for row in entry["versions"]:
            rows.append(
                [
                    row["version"],
                    ",".join(row["stages"]) or "-",
                    row["commit"][:7],
                    row["created_at"][:19].replace("T", " "),
                    row["experiment"] or "?",
                    row["model"] or "?",
                ]
                + [f"{row['metrics'][m]:.4f}" if m in row["metrics"] else "-" for m in metric_names]
            )
        if len(rows) == 1:
            blocks.append(f"{header}\n  no versions yet")
            continue
        widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
        table = [
            "  " + "  ".join(str(cell).ljust(width) for cell, width in zip(r, widths, strict=True))
            for r in rows
        ]
        blocks.append("\n".join([header, *(line.rstrip() for line in table)]))
    return "\n\n".join(blocks)
