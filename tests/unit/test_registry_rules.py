"""The registry's pure parts: version names, promotion rules, DVC's directory hash, the table of
`registry show`, the `registry:` section of params.yaml, and the select stage on hand-made
metrics."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace

import numpy as np
import pytest

from pipeline.core.errors import AtelierError, ParamsError
from pipeline.core.metrics import lower_is_better
from pipeline.modeling.models import LinearPredictor
from pipeline.params import RegistryParams, load_params, parse_params
from pipeline.registry import (
    Promotion,
    RegistryError,
    check_rules,
    format_promotion,
    format_show,
    next_version,
    parse_version,
    tree_md5,
)
from pipeline.registry.rules import promotion_tag_lines, refusal_message
from pipeline.stages.select import select

# --- versions -----------------------------------------------------------------------------------


def test_versions_start_at_0_1_0_and_bump_the_minor_number():
    assert next_version(None) == "v0.1.0"
    assert next_version("v0.1.0") == "v0.2.0"
    assert next_version("v0.9.3") == "v0.10.0"
    assert next_version("v2.4.1") == "v2.5.0"
    assert parse_version("1.2.3") == parse_version("v1.2.3") == (1, 2, 3)


@pytest.mark.parametrize("text", ["latest", "v1.2", "1.2.3.4", "v01.2.3", ""])
def test_a_malformed_version_is_refused_with_the_expected_form(text):
    with pytest.raises(RegistryError, match=r"is not a version: write it as v0\.2\.0"):
        parse_version(text)


# --- rules --------------------------------------------------------------------------------------


def card(value: float, *, experiment="mlp_a", baseline: float | None = 0.90, **metrics) -> dict:
    return {
        "dataset": "digits",
        "experiment": experiment,
        "metrics": {"test_accuracy": value, "test_loss": 1 - value, **metrics},
        "baseline": (
            None
            if baseline is None
            else {
                "experiment": "sgd",
                "metrics": {"test_accuracy": baseline, "test_loss": 1 - baseline},
            }
        ),
    }


RULES = RegistryParams(
    stages={"staging": {"test_accuracy": 0.8}, "prod": {"test_accuracy": 0.95, "test_loss": 0.1}},
    min_improvement=0.01,
)


def by_name(rules):
    return {rule.name: rule for rule in rules}


def test_every_rule_passes_for_a_good_first_version():
    rules = check_rules(card(0.97), stage="prod", rules=RULES)
    assert [rule.passed for rule in rules] == [True, True, True, True]
    text = [str(rule) for rule in rules]
    assert text[0] == "[PASS] test_accuracy >= 0.95 for prod: test_accuracy = 0.9700"
    assert text[1] == "[PASS] test_loss <= 0.1 for prod: test_loss = 0.0300"
    assert text[2] == (
        "[PASS] beats the sgd_logistic baseline on digits in test_accuracy: 0.9700 vs 0.9000 (sgd)"
    )
    assert text[3] == (
        "[PASS] beats the prod holder by at least 0.01 in test_accuracy: no version holds prod yet"
    )


def test_thresholds_are_per_stage_and_loss_like_metrics_are_maximums():
    staging = by_name(check_rules(card(0.85), stage="staging", rules=RULES))
    assert staging["test_accuracy >= 0.8 for staging"].passed
    prod = by_name(check_rules(card(0.85), stage="prod", rules=RULES))
    assert not prod["test_accuracy >= 0.95 for prod"].passed
    assert not prod["test_loss <= 0.1 for prod"].passed  # 0.15 > 0.1
    assert prod["test_loss <= 0.1 for prod"].figure == "test_loss = 0.1500"


def test_a_threshold_on_a_metric_the_card_lacks_fails_and_says_so():
    rules = RegistryParams(stages={"prod": {"macro_f1": 0.5}}, require_beat_baseline=False)
    (threshold, _holder) = check_rules(card(0.97), stage="prod", rules=rules)
    assert not threshold.passed
    assert threshold.figure == "macro_f1 is not in the version's metrics"


def test_the_holder_must_be_beaten_by_min_improvement():
    holder = card(0.96)
    gain_too_small = by_name(
        check_rules(card(0.965), stage="prod", rules=RULES, holder_card=holder, holder_version="v1")
    )
    rule = gain_too_small["beats the prod holder by at least 0.01 in test_accuracy"]
    assert not rule.passed
    assert rule.figure == "0.9650 vs 0.9600 of v1 (+0.0050)"
    enough = by_name(
        check_rules(card(0.975), stage="prod", rules=RULES, holder_card=holder, holder_version="v1")
    )
    assert enough["beats the prod holder by at least 0.01 in test_accuracy"].passed


def test_with_min_improvement_zero_a_tie_with_the_holder_passes_and_worse_fails():
    rules = RegistryParams(require_beat_baseline=False)
    tie = check_rules(card(0.96), stage="prod", rules=rules, holder_card=card(0.96))
    assert [rule.passed for rule in tie] == [True]
    worse = check_rules(card(0.95), stage="prod", rules=rules, holder_card=card(0.96))
    assert [rule.passed for rule in worse] == [False]


def test_a_loss_metric_ranks_lower_as_better_against_holder_and_baseline():
    rules = RegistryParams(metric="test_loss")
    result = by_name(
        check_rules(
            card(0.97), stage="prod", rules=rules, holder_card=card(0.95), holder_version="v1"
        )
    )
    holder_rule = result["beats the prod holder by at least 0 in test_loss"]
    assert holder_rule.passed
    assert holder_rule.figure == "0.0300 vs 0.0500 of v1 (+0.0200)"
    assert result["beats the sgd_logistic baseline on digits in test_loss"].passed
    worse = by_name(check_rules(card(0.85), stage="prod", rules=rules, holder_card=card(0.95)))
    assert not worse["beats the prod holder by at least 0 in test_loss"].passed


@pytest.mark.parametrize(
    ("candidate", "figure", "passed"),
    [
        (card(0.89), "0.8900 vs 0.9000 (sgd)", False),
        (card(0.90), "0.9000 vs 0.9000 (sgd)", False),  # a tie does not beat it
        (card(0.90, experiment="sgd"), "the champion is the baseline itself (sgd)", False),
        (
            card(0.99, baseline=None),
            "no sgd_logistic experiment on this dataset to compare with",
            False,
        ),
    ],
)
def test_the_baseline_rule(candidate, figure, passed):
    rules = RegistryParams()
    (baseline_rule, _holder) = check_rules(candidate, stage="prod", rules=rules)
    assert baseline_rule.name == "beats the sgd_logistic baseline on digits in test_accuracy"
    assert (baseline_rule.figure, baseline_rule.passed) == (figure, passed)


def test_the_baseline_rule_can_be_switched_off():
    rules = RegistryParams(require_beat_baseline=False)
    names = [rule.name for rule in check_rules(card(0.5), stage="prod", rules=rules)]
    assert names == ["beats the prod holder by at least 0 in test_accuracy"]


def test_a_metrics_direction_comes_from_pipeline_core_metrics():
    # A spread across folds is better when lower (`_std`), as early stopping and the report read
    # it: a threshold on it is a maximum and a smaller one beats the holder.
    rules = RegistryParams(
        metric="cv_accuracy_std",
        stages={"prod": {"cv_accuracy_std": 0.02}},
        require_beat_baseline=False,
    )
    candidate = {"metrics": {"cv_accuracy_std": 0.01}}
    threshold, holder_rule = check_rules(
        candidate, stage="prod", rules=rules, holder_card={"metrics": {"cv_accuracy_std": 0.03}}
    )
    assert threshold.name == "cv_accuracy_std <= 0.02 for prod" and threshold.passed
    assert holder_rule.passed and holder_rule.figure.endswith("(+0.0200)")


ORDERED = RegistryParams(require_beat_baseline=False, stage_order=["staging", "prod"])


def test_stage_order_lets_a_stage_go_only_to_a_version_that_held_the_one_before():
    never = check_rules(card(0.97), stage="prod", rules=ORDERED, version="v0.3.0")
    assert [str(rule) for rule in never] == [
        "[FAIL] held staging before prod: v0.3.0 never held staging",
        "[PASS] beats the prod holder by at least 0 in test_accuracy: no version holds prod yet",
    ]
    assert never[0].fix == "promote v0.3.0 to staging first (registry.stage_order in params.yaml)"
    # Held, not holds: a version that lost staging to a newer one (or a rollback) went through it.
    held = check_rules(card(0.97), stage="prod", rules=ORDERED, version="v0.3.0", held={"staging"})
    assert str(held[0]) == "[PASS] held staging before prod: v0.3.0 has held staging"
    staging = check_rules(card(0.97), stage="staging", rules=ORDERED, version="v0.3.0")
    assert [rule.name for rule in staging] == [
        "beats the staging holder by at least 0 in test_accuracy"
    ]  # the first stage of the order is open to any version


def test_without_stage_order_any_stage_is_open_to_any_version():
    assert RegistryParams().stage_order == []
    rules = check_rules(card(0.97), stage="prod", rules=RegistryParams(require_beat_baseline=False))
    assert [rule.name for rule in rules] == ["beats the prod holder by at least 0 in test_accuracy"]


def test_stage_order_holds_for_regression_and_multilabel_artifacts_too():
    for dataset in ("diabetes", "garments"):
        rules = ORDERED.for_dataset(dataset)
        assert rules.required_before("prod") == "staging"
        assert rules.required_before("staging") is None


def test_a_refusal_by_stage_order_says_the_fix_and_force_records_the_override():
    rules = check_rules(card(0.97), stage="prod", rules=ORDERED, version="v0.3.0")
    refused = Promotion("digits-classifier", "v0.3.0", "prod", rules, promoted=False)
    message = refusal_message(refused)
    assert message.startswith(
        "Refused to promote digits-classifier v0.3.0 to prod: failed rule(s): held staging "
        "before prod.\n  [FAIL] held staging before prod: v0.3.0 never held staging\n"
    )
    assert (
        "To pass 'held staging before prod': promote v0.3.0 to staging first "
        "(registry.stage_order in params.yaml)." in message
    )
    forced = replace(refused, promoted=True, forced=True, tag="digits-classifier#prod#3")
    assert format_promotion(forced).splitlines()[:2] == [
        "digits-classifier v0.3.0 -> prod: promoted (forced) [digits-classifier#prod#3]",
        "  [FAIL] held staging before prod: v0.3.0 never held staging",
    ]
    assert "forced: true (--force; failing rules overridden: held staging before prod)" in (
        promotion_tag_lines(forced)
    )


# --- DVC's directory hash -----------------------------------------------------------------------


def test_tree_md5_is_the_hash_dvc_gives_a_directory():
    from dvc_data.hashfile.hash_info import HashInfo
    from dvc_data.hashfile.meta import Meta
    from dvc_data.hashfile.tree import Tree

    files = {"model.keras": b"weights", "card.json": b"{}", "sub/x.bin": b"\x00\x01"}
    md5s = {name: hashlib.md5(data).hexdigest() for name, data in files.items()}
    tree = Tree()
    for name, md5 in md5s.items():
        tree.add(tuple(name.split("/")), Meta(), HashInfo("md5", md5))
    tree.digest()
    assert tree_md5(md5s) == tree.hash_info.value
    assert tree_md5(md5s).endswith(".dir")
    assert tree_md5({**md5s, "card.json": "0" * 32}) != tree_md5(md5s)


# --- registry show -------------------------------------------------------------------------------


def show_row(version: str, files: str, **fields) -> dict:
    row = {
        "version": version,
        "commit": "0123456789abcdef",
        "created_at": "2024-05-01T12:00:00+00:00",
        "stages": [],
        "files": files,
        "problem": None,
        "experiment": None,
        "model": None,
        "metrics": {},
    }
    return row | fields


def test_show_marks_a_version_that_failed_verification_and_shows_none_of_its_figures():
    problem = "digits-classifier v0.2.0 (commit 0123456) failed verification against dvc.lock"
    state = {
        "digits-classifier": {
            "dataset": "digits",
            "latest": "v0.2.0",
            "stages": {"staging": None, "prod": "v0.1.0"},
            "versions": [
                show_row("v0.2.0", "MISMATCH", problem=problem),
                show_row(
                    "v0.1.0",
                    "verified",
                    stages=["prod"],
                    experiment="digits_mlp",
                    model="mlp",
                    metrics={"test_accuracy": 0.93},
                ),
            ],
        }
    }
    lines = format_show(state).splitlines()
    assert lines[0] == "digits-classifier (digits): latest v0.2.0; staging: -, prod: v0.1.0"
    assert lines[1].split() == [
        "version", "stages", "commit", "created", "(UTC)", "files", "experiment", "model",
        "test_accuracy",
    ]  # fmt: skip
    # The forged version: marked, no experiment, model or metric (`-`), whatever its card says.
    assert lines[2].split()[3:] == ["2024-05-01", "12:00:00", "MISMATCH", "-", "-", "-"]
    assert lines[3].split()[-4:] == ["ok", "digits_mlp", "mlp", "0.9300"]
    assert lines[4] == f"  ! v0.2.0 is not shown: {problem}"


# --- params.yaml `registry:` --------------------------------------------------------------------

BASE = {"data": {"datasets": ["digits"]}}


def test_registry_section_is_optional_with_documented_defaults():
    registry = parse_params(BASE).registry
    assert registry.metric == "test_accuracy"
    assert registry.min_improvement == 0.0
    assert registry.require_beat_baseline is True
    assert registry.stages == {}
    assert registry.artifact_name("fashion_mnist") == "fashion-mnist-classifier"
    assert not lower_is_better(registry.metric)


def test_registry_artifact_names_come_from_params():
    params = parse_params({**BASE, "registry": {"artifacts": {"digits": "tiny-digits"}}})
    assert params.registry.artifact_name("digits") == "tiny-digits"


@pytest.mark.parametrize(
    ("registry", "message"),
    [
        (
            {"metrc": "test_loss"},
            "registry.metrc: unknown key (did you mean 'metric'?); allowed keys under registry:",
        ),
        ({"stages": {"production": {}}}, "registry.stages.production"),
        ({"min_improvement": -0.1}, "registry.min_improvement = -0.1: Input should be greater"),
        ({"artifacts": {"digits": "Digits_Model"}}, "registry.artifacts.digits = 'Digits_Model'"),
        ({"artifacts": {"cifar": "cifar-model"}}, "unknown dataset 'cifar'"),
        (
            {"artifacts": {"digits": "same", "mnist": "same"}},
            "gives two datasets the same artifact name",
        ),
        ({"stages": {"prod": {"test_accuracy": "high"}}}, "registry.stages.prod.test_accuracy"),
    ],
)
def test_registry_mistakes_name_the_key(registry, message):
    with pytest.raises(ParamsError) as error:
        parse_params({**BASE, "registry": registry})
    assert message in str(error.value)


@pytest.mark.parametrize(
    ("order", "message"),
    [
        (
            ["stagin", "prod"],
            "registry.stage_order = ['stagin', 'prod']: unknown stage 'stagin' (did you mean "
            "'staging'?); stages are staging, prod",
        ),
        (["staging", "staging"], "lists a stage twice"),
        (["prod"], "registry.stage_order = ['prod']: needs two stages or more"),
        (
            ["prod", "staging"],
            "must follow the order `release` climbs the stages: staging, prod",
        ),
        ("staging, prod", "registry.stage_order = 'staging, prod': Input should be a valid list"),
    ],
)
def test_stage_order_mistakes_name_the_key(order, message):
    with pytest.raises(ParamsError) as error:
        parse_params({**BASE, "registry": {"stage_order": order}})
    assert message in str(error.value)


def test_the_project_promotes_to_prod_only_from_staging(project_root):
    registry = load_params(project_root / "params.yaml").registry
    assert registry.stage_order == ["staging", "prod"]
    assert registry.required_before("prod") == "staging"


# --- the select stage ---------------------------------------------------------------------------


def write_experiment(root, name, *, model, accuracy, loss, keras=False):
    (root / "metrics").mkdir(exist_ok=True)
    metrics = {
        "test_accuracy": accuracy,
        "test_loss": loss,
        "macro_f1": accuracy - 0.01,
        "model": model,
        "dataset": "digits",
    }
    (root / "metrics" / f"{name}.json").write_text(json.dumps(metrics))
    directory = root / "models" / name
    directory.mkdir(parents=True)
    if keras:
        (directory / "best.keras").write_bytes(f"keras archive of {name}".encode())
        summary = {
            "model_file": "best.keras",
            "backend": "tensorflow",
            "tensorflow_version": "2.x",
            "keras_version": "3.x",
        }
    else:
        predictor = LinearPredictor(
            coef=np.ones((10, 64), np.float32),
            intercept=np.zeros(10, np.float32),
            classes=np.arange(10),
            value_max=16.0,
        )
        predictor.save(directory / "model.npz")
        summary = {"model_file": "model.npz", "sklearn_version": "1.x"}
    (directory / "train.json").write_text(json.dumps(summary))


def select_params(metric="test_accuracy"):
    return parse_params(
        {
            "data": {"datasets": ["digits"]},
            "experiments": {
                "digits_mlp": {"dataset": "digits", "model": {"name": "mlp", "units": [8]}},
                "digits_sgd": {"dataset": "digits", "model": {"name": "sgd_logistic"}},
            },
            "registry": {"metric": metric},
        }
    )


def test_select_copies_the_best_experiment_with_a_card(tmp_path):
    write_experiment(tmp_path, "digits_mlp", model="mlp", accuracy=0.95, loss=0.2, keras=True)
    write_experiment(tmp_path, "digits_sgd", model="sgd_logistic", accuracy=0.90, loss=0.1)
    card = select(select_params(), "digits", root=tmp_path)
    champion = tmp_path / "models/champions/digits"
    assert sorted(p.name for p in champion.iterdir()) == ["card.json", "model.keras"]
    assert (champion / "model.keras").read_bytes() == b"keras archive of digits_mlp"
    assert json.loads((champion / "card.json").read_text()) == card
    assert card["experiment"] == "digits_mlp"
    assert card["artifact"] == "digits-classifier"
    assert card["model_md5"] == hashlib.md5(b"keras archive of digits_mlp").hexdigest()
    assert (card["metric"], card["value"]) == ("test_accuracy", 0.95)
    assert card["params"]["model"]["units"] == [8]
    assert [row["experiment"] for row in card["leaderboard"]] == ["digits_mlp", "digits_sgd"]
    assert card["baseline"]["experiment"] == "digits_sgd"
    assert card["versions"]["trained_with"] == {"tensorflow_version": "2.x", "keras_version": "3.x"}
    assert card["backend"] == "tensorflow"  # the Keras backend that trained it
    assert "keras" in card["versions"] and "python" in card["versions"]


def test_select_with_a_loss_metric_keeps_the_lowest_and_the_baseline_as_npz(tmp_path):
    write_experiment(tmp_path, "digits_mlp", model="mlp", accuracy=0.95, loss=0.2, keras=True)
    write_experiment(tmp_path, "digits_sgd", model="sgd_logistic", accuracy=0.90, loss=0.1)
    card = select(select_params("test_loss"), "digits", root=tmp_path)
    assert (card["experiment"], card["model_file"], card["value"]) == (
        "digits_sgd",
        "model.npz",
        0.1,
    )
    loaded = LinearPredictor.load(tmp_path / "models/champions/digits/model.npz")
    assert loaded.coef.shape == (10, 64)


def test_select_refuses_when_an_experiment_was_not_evaluated(tmp_path):
    write_experiment(tmp_path, "digits_mlp", model="mlp", accuracy=0.95, loss=0.2, keras=True)
    with pytest.raises(AtelierError, match=r"digits_sgd\.json not found: experiment 'digits_sgd'"):
        select(select_params(), "digits", root=tmp_path)
    assert not (tmp_path / "models/champions").exists()


def test_select_refuses_a_metric_the_files_do_not_have(tmp_path):
    write_experiment(tmp_path, "digits_mlp", model="mlp", accuracy=0.95, loss=0.2, keras=True)
    write_experiment(tmp_path, "digits_sgd", model="sgd_logistic", accuracy=0.90, loss=0.1)
    with pytest.raises(AtelierError) as error:
        select(select_params("top5_accuracy"), "digits", root=tmp_path)
    assert "has no finite number under 'top5_accuracy' (params.yaml registry.metric)" in str(
        error.value
    )
    assert "macro_f1, test_accuracy, test_loss" in str(error.value)


def test_select_refuses_a_dataset_without_experiments(tmp_path):
    with pytest.raises(AtelierError, match="No experiment in params.yaml uses dataset 'mnist'"):
        select(select_params(), "mnist", root=tmp_path)


def test_regression_and_multilabel_sets_use_their_own_rules():
    rules = RegistryParams(
        stages={"prod": {"test_accuracy": 0.95}},
        regression={"metric": "test_mae", "stages": {"prod": {"test_mae": 3.0}}},
        multilabel={"metric": "micro_f1", "stages": {"prod": {"micro_f1": 0.8}}},
    )
    regression = rules.for_dataset("boston_housing")
    assert regression.metric == "test_mae" and lower_is_better(regression.metric)
    assert not regression.require_beat_baseline
    candidate = {"dataset": "boston_housing", "experiment": "reg", "metrics": {"test_mae": 2.5}}
    worse = {"dataset": "boston_housing", "experiment": "reg", "metrics": {"test_mae": 3.5}}
    assert all(rule.passed for rule in check_rules(candidate, stage="prod", rules=regression))
    failed = by_name(check_rules(worse, stage="prod", rules=regression))
    assert not failed["test_mae <= 3 for prod"].passed  # a maximum: lower is better
    holder = {"metrics": {"test_mae": 2.6}}
    ranked = check_rules(candidate, stage="prod", rules=regression, holder_card=holder)
    assert ranked[-1].passed  # 2.5 beats the holder's 2.6 because lower is better

    tagger = rules.for_dataset("garments")
    assert tagger.metric == "micro_f1" and not lower_is_better(tagger.metric)
    assert rules.for_dataset("fashion_mnist") is rules
    assert rules.artifact_name("diabetes") == "diabetes-regressor"
