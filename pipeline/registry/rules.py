"""Promotion rules: what a version's card must show to be given a stage, and how it reads.

Pure functions of the cards: the registry verifies each card against `dvc.lock` before it
calls them (`pipeline/registry/store.py`). A metric's direction comes from
`pipeline.core.metrics`, the one place every stage, report and flow reads it from.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from pipeline.core.metrics import is_better, lower_is_better
from pipeline.params import RegistryParams
from pipeline.registry.errors import RegistryError


@dataclass(frozen=True)
class Rule:
    """One promotion rule: what it checks, the figures it compared, and whether it passed."""

    name: str
    figure: str
    passed: bool
    fix: str | None = None  # what makes a failed rule pass, for the refusal message

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


class PromotionRefused(RegistryError):
    """A promotion rule failed; `promotion` holds every rule with its figure."""

    def __init__(self, message: str, promotion: Promotion):
        super().__init__(message)
        self.promotion = promotion


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


def check_rules(
    card: dict,
    *,
    stage: str,
    rules: RegistryParams,
    holder_card: dict | None = None,
    holder_version: str | None = None,
    version: str = "this version",
    held: Collection[str] = (),
) -> list[Rule]:
    """Evaluate `params.yaml`'s registry rules for promoting the version described by `card`.

    Args:
        card: the candidate's verified `card.json` (its `metrics` and the `baseline` it was
            selected with).
        stage: the stage it would be assigned.
        rules: `params.registry` (for the artifact's dataset).
        holder_card: the verified card of the version holding `stage` now, if any.
        holder_version: that version's name, for the message.
        version: the candidate's name, for the message.
        held: every stage the candidate has ever been assigned (GTO's stage tags on it), for
            `registry.stage_order`.

    Returns:
        The order rule (when `stage_order` lists a stage before `stage`), then one `Rule` per
        threshold of the stage, then the baseline rule (when required), then the rule against
        the current holder; promotion is allowed when all pass.
    """
    metrics = card.get("metrics", {})
    before = rules.required_before(stage)
    result = [] if before is None else [_order_rule(before, stage, version, held)]
    result += [
        _threshold_rule(metrics, metric, threshold, stage)
        for metric, threshold in rules.stages.get(stage, {}).items()
    ]
    metric = rules.metric
    value = metrics.get(metric)
    if rules.require_beat_baseline:
        result.append(_baseline_rule(card, metric, value))
    name = f"beats the {stage} holder by at least {rules.min_improvement:g} in {metric}"
    if holder_card is None:
        result.append(Rule(name, f"no version holds {stage} yet", True))
        return result
    held = holder_card.get("metrics", {}).get(metric)
    if not (is_number(value) and is_number(held)):
        result.append(Rule(name, f"{metric} missing from this or {holder_version}'s card", False))
        return result
    gain = held - value if lower_is_better(metric) else value - held
    figure = f"{value:.4f} vs {held:.4f} of {holder_version} ({gain:+.4f})"
    # At least `min_improvement`: with the default 0, a tie with the holder passes.
    result.append(Rule(name, figure, gain >= rules.min_improvement))
    return result


def _order_rule(before: str, stage: str, version: str, held: Collection[str]) -> Rule:
    # "Held" is "was ever assigned": a version that held staging and lost it to a newer one,
    # or to a rollback, still went through staging.
    name = f"held {before} before {stage}"
    if before in held:
        return Rule(name, f"{version} has held {before}", True)
    fix = f"promote {version} to {before} first (registry.stage_order in params.yaml)"
    return Rule(name, f"{version} never held {before}", False, fix)


def _threshold_rule(metrics: dict, metric: str, threshold: float, stage: str) -> Rule:
    lower = lower_is_better(metric)
    name = f"{metric} {'<=' if lower else '>='} {threshold:g} for {stage}"
    value = metrics.get(metric)
    if not is_number(value):
        return Rule(name, f"{metric} is not in the version's metrics", False)
    passed = value <= threshold if lower else value >= threshold
    return Rule(name, f"{metric} = {value:.4f}", passed)


def _baseline_rule(card: dict, metric: str, value: Any) -> Rule:
    baseline = card.get("baseline")
    name = f"beats the sgd_logistic baseline on {card.get('dataset', 'its dataset')} in {metric}"
    if not baseline:
        return Rule(name, "no sgd_logistic experiment on this dataset to compare with", False)
    if baseline.get("experiment") == card.get("experiment"):
        return Rule(name, f"the champion is the baseline itself ({baseline['experiment']})", False)
    base_value = baseline.get("metrics", {}).get(metric)
    if not (is_number(value) and is_number(base_value)):
        return Rule(name, f"{metric} missing from the card or the baseline's metrics", False)
    passed = is_better(metric, value, base_value)  # strictly: a tie does not beat it
    return Rule(name, f"{value:.4f} vs {base_value:.4f} ({baseline['experiment']})", passed)


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def refusal_message(promotion: Promotion) -> str:
    """Why `promotion` was refused: the failed rules by name, then every rule with its figure."""
    failed = "; ".join(rule.name for rule in promotion.failed)
    fixes = [f"\nTo pass {rule.name!r}: {rule.fix}." for rule in promotion.failed if rule.fix]
    return (
        f"Refused to promote {promotion.artifact} {promotion.version} to {promotion.stage}: "
        f"failed rule(s): {failed}.\n"
        + "\n".join(f"  {rule}" for rule in promotion.rules)
        + "".join(fixes)
        + "\nRules are in params.yaml `registry:`; --force promotes anyway and is recorded in "
        "the tag."
    )


def promotion_tag_lines(promotion: Promotion) -> list[str]:
    """The message of a stage tag: every rule, whether it was forced, and the previous holder."""
    lines = [f"Promote {promotion.artifact} {promotion.version} to {promotion.stage}", ""]
    lines += [str(rule) for rule in promotion.rules]
    if promotion.forced:
        overridden = ", ".join(rule.name for rule in promotion.failed) or "none"
        lines += ["", f"forced: true (--force; failing rules overridden: {overridden})"]
    if promotion.previous is not None:
        lines.append(f"previous: {promotion.previous}")
    return lines


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
