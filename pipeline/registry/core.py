"""The `Registry`: register, promote, release, roll back, show and get, over GTO's git tags.

Nothing here keeps state of its own. DVC stores the files (`models/champions/<dataset>/`, an
output of `select@<dataset>` declared under `artifacts:` in `dvc.yaml`) and records their hash
in `dvc.lock`; GTO's tags record versions and stages (`pipeline/registry/tags.py`), so `gto show`
and `registry show` read the same registry.

Every decision reads a version's files only after `store.fetch_verified` checked them against
the hashes in `dvc.lock` at the version's commit: `promote` (and so `release`) the cards of the
candidate and of the stage holder, `rollback` the version it gives the stage back to, `show`
every card it displays, `get` and `load` the files they hand out. The stage holder is what
GTO shows (`holders`); `rollback` keeps DVC's own reading of the tags in agreement with it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

from gto.versions import SemVer

import pipeline.registry.store as store
import pipeline.registry.tags as tags
import pipeline.registry.workspace as workspace
from pipeline.params import Params, load_params
from pipeline.registry.errors import NothingToRegister, RegistryError
from pipeline.registry.rules import (
    Promotion,
    PromotionRefused,
    Release,
    Rollback,
    check_rules,
    promotion_tag_lines,
    refusal_message,
)
from pipeline.registry.showing import PRIMARY_METRICS, version_row
from pipeline.registry.versions import STAGES, Version, check_stage, next_version, parse_version
from pipeline.stages.select import CARD_FILE, CHAMPIONS_DIR

log = logging.getLogger(__name__)


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

    def _champion(self, version: Version) -> store.Champion:
        dataset = self.dataset_of(version.artifact)
        path = self.champion_path(version.artifact)
        return store.Champion(version.label, version.commit, f"select@{dataset}", path)

    # --- reading the registry -------------------------------------------------------------------

    def versions(self, artifact: str) -> list[Version]:
        """Registered (and not deregistered) versions of `artifact`, oldest version first."""
        self.dataset_of(artifact)
        gto_artifact = self._gto_state().artifacts.get(artifact)
        if gto_artifact is None:
            return []
        result = [
            Version.from_gto(artifact, version)
            for version in gto_artifact.versions
            if version.is_registered and version.is_active
        ]
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
        check_stage(stage)
        self.dataset_of(artifact)
        names = tags.holder_names(self._gto_state().artifacts.get(artifact), stage)
        by_name = {v.version: v for v in self.versions(artifact)}
        return [by_name[name] for name in names if name in by_name]

    def holder(self, artifact: str, stage: str) -> Version | None:
        holders = self.holders(artifact, stage)
        return holders[0] if holders else None

    def stages_held(self, artifact: str, version: Version) -> set[str]:
        """Every stage `version` was ever assigned, held now or not (`registry.stage_order`)."""
        return tags.stages_held(self._gto_state().artifacts.get(artifact), version.version)

    def card(self, version: Version) -> dict:
        """The `card.json` of `version`, once its files passed verification against dvc.lock.

        Raises:
            FilesMismatch: a file differs from what dvc.lock recorded at the version's commit.
            FilesUnavailable: neither the DVC cache nor the remote has the files.
        """
        return store.read_verified_card(self.root, self._champion(version))

    def verify(self, version: Version) -> dict[str, str]:
        """Check `version`'s files against dvc.lock (as `card` does); `{file: md5}` if intact."""
        return store.verify(self.root, self._champion(version))

    def show(self, artifact: str | None = None) -> dict:
        """The registry as data: per artifact, its latest version, stage holders, and versions.

        Each version lists its commit, date, the stages it holds and, from its verified card,
        the experiment, model, `PRIMARY_METRICS` and the ranking metric. A version whose files
        fail verification is listed with `files` set to `MISMATCH` (or `unavailable`), the
        reason under `problem`, and no figures (`pipeline/registry/showing.py`).
        """
        names = [artifact] if artifact else sorted(self.artifacts)
        metrics = {*PRIMARY_METRICS, self.params.registry.metric}
        result = {}
        for name in names:
            versions = self.versions(name)
            stages = {stage: self.holder(name, stage) for stage in STAGES}
            rows = []
            for version in reversed(versions):
                card, problem = None, None
                try:
                    card = self.card(version)
                except RegistryError as exc:
                    log.warning("%s", exc)
                    problem = exc
                held = [s for s, v in stages.items() if v and v.version == version.version]
                rows.append(version_row(version, held, card, problem, metrics))
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
        `dvc status` shows the champion's pipeline out of date with dvc.lock (which is what
        checks the workspace card read here), or (as `NothingToRegister`) when HEAD is
        registered already or its champion model is the latest version's. Pushes the champion
        to the default DVC remote when one is set, so the version can be fetched elsewhere,
        then creates the tag; if another process took the version name first, the state is
        read again and the next name tried.
        """
        dataset = self.dataset_of(artifact)
        workspace.require_clean_tree(self.root)
        head = tags.git(self.root, "rev-parse", "HEAD")
        workspace.require_head_unregistered(artifact, head, self.versions(artifact))
        workspace.require_pipeline_current(self.root, dataset)
        path = self.champion_path(artifact)
        champion_md5 = store.lock_md5(self.root, head, f"select@{dataset}", path)
        if champion_md5 is None:
            raise RegistryError(
                f"dvc.lock at HEAD records no champion for {dataset!r}: run "
                f"`dvc repro select@{dataset}`, commit dvc.lock, then register."
            )
        card = json.loads((self.root / path / CARD_FILE).read_text())
        self._require_new_champion(artifact, head, card, self.versions(artifact))
        workspace.push(self.root, dataset)
        for _ in range(tags.MAX_TAG_ATTEMPTS):
            # Read again on every attempt: a racing process may have registered meanwhile.
            versions = self.versions(artifact)
            self._require_new_champion(artifact, head, card, versions)
            candidate = next_version(versions[-1].version if versions else None)
            tag = f"{artifact}@{candidate}"
            message = tags.registration_message(artifact, candidate, card, champion_md5)
            if tags.create_tag(self.root, artifact, tag, head, message):
                log.info("Registered %s %s at %s", artifact, candidate, head[:7])
                return self.find_version(artifact, candidate)
            log.info("%s was taken by another process; reading the registry again", tag)
        raise RegistryError(
            f"Could not register {artifact}: {tags.MAX_TAG_ATTEMPTS} version names in a row were "
            "taken by other processes. Try again."
        )

    def _require_new_champion(
        self, artifact: str, head: str, card: dict, versions: list[Version]
    ) -> None:
        workspace.require_head_unregistered(artifact, head, versions)
        latest = versions[-1] if versions else None
        if latest is not None and self._model_md5(latest) == card["model_md5"]:
            raise NothingToRegister(
                f"The champion at HEAD ({card['experiment']}, model md5 "
                f"{card['model_md5'][:12]}) is the model of {artifact} {latest.version}: "
                "nothing changed, so no version was created."
            )

    def _model_md5(self, version: Version) -> str | None:
        # From the registration tag's message (git); only tags older than that field need
        # the card, which is verified like every other card read.
        return version.model_md5 or self.card(version).get("model_md5")

    def promote(
        self, artifact: str, stage: str, *, version: str | None = None, force: bool = False
    ) -> Promotion:
        """Assign `stage` to `version` (default: the latest) if it passes the rules.

        The rules read the cards of the version and of the stage's holder, each verified
        against dvc.lock at its commit first, and the stages the version has held (for
        `registry.stage_order`); `--force` overrides rules, never verification.

        Raises:
            PromotionRefused: a rule failed and `force` is false; its message lists the rules.
            FilesMismatch: the version's or the holder's files are not the registered ones.
            RegistryError: unknown artifact, stage or version, or the version holds the
                stage already.
        """
        check_stage(stage)
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
            version=target.version,
            held=self.stages_held(artifact, target),
        )
        promotion = Promotion(
            artifact=artifact,
            version=target.version,
            stage=stage,
            rules=rules,
            promoted=False,
            forced=force,
            previous=holder.version if holder else None,
        )
        if promotion.failed and not force:
            raise PromotionRefused(refusal_message(promotion), promotion)
        lines = promotion_tag_lines(promotion)
        prefix = f"{artifact}#{stage}"
        tag = tags.create_counted_tag(self.root, artifact, prefix, target.commit, lines)
        log.info("%s %s now holds %s (%s)", artifact, target.version, stage, tag)
        return replace(promotion, promoted=True, tag=tag)

    def release(self, artifact: str) -> Release:
        """Register the champion at HEAD if it changed, then promote it as far as rules allow.

        Stages are tried in order (staging, then prod), so a version reaches prod through
        staging as `registry.stage_order` asks; the first refusal by rule stops the climb and is
        reported in the result, not raised: this is what a scheduled flow runs.
        Files that fail verification are raised (`FilesMismatch`), as by `promote`.
        """
        try:
            version = self.register(artifact)
            registered = True
        except NothingToRegister as exc:
            log.info("%s", exc)
            head = tags.git(self.root, "rev-parse", "HEAD")
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

        That version's files are verified against dvc.lock first: the stage is not handed to
        files that `get` would refuse. Then two tags: `<artifact>#<stage>!#N` on the current
        holder's commit takes the stage from it, so GTO reads the previous holder as the holder
        again (and a second rollback goes one further back); then `<artifact>#<stage>#N+1` on
        the previous holder's commit makes it the stage's latest assignment, which is what
        `dvc artifacts get --stage` reads. After a crash between the two, `registry show` and
        `gto show` already show the rollback done; only `dvc artifacts get --stage` still reads
        the newer version.
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
        self.verify(previous)
        lines = [f"Roll back {artifact} {stage}: {current.version} -> {previous.version}"]
        tags.create_counted_tag(self.root, artifact, f"{artifact}#{stage}!", current.commit, lines)
        lines += ["", f"rollback: {current.version} -> {previous.version}"]
        prefix = f"{artifact}#{stage}"
        tag = tags.create_counted_tag(self.root, artifact, prefix, previous.commit, lines)
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
            check_stage(stage)
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
        commit, and must pass `store.fetch_verified` (the hashes dvc.lock recorded at that
        commit); otherwise nothing is written and `RegistryError` is raised. Returns the model
        file's path.
        """
        target = self.resolve(artifact, stage=stage, version=version)
        path = store.write_verified(self.root, self._champion(target), Path(out))
        log.info("Wrote %s %s (%s) to %s", artifact, target.version, path.name, out)
        return path

    def _gto_state(self):
        from gto.registry import GitRegistry

        with GitRegistry.from_url(str(self.root)) as registry:
            return registry.get_state()
