"""The stage CLI that dvc.yaml calls: `python -m pipeline <stage> [item]`.

It parses `params.yaml` once into the typed `Params`, builds paths, and calls the stage
function. A user mistake (`AtelierError`) is printed as one message, without a traceback, and
the process exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from pipeline.core import paths
from pipeline.core.errors import AtelierError

STAGES = ("download", "preprocess", "split", "train", "evaluate", "report")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__)
    parser.add_argument("--params", type=Path, default=paths.PARAMS_FILE)
    sub = parser.add_subparsers(dest="command", required=True)
    for stage in ("download", "preprocess", "split"):
        sub.add_parser(stage, help=f"{stage} stage for one dataset").add_argument("dataset")
    train = sub.add_parser("train", help="train one experiment")
    train.add_argument("experiment")
    train.add_argument(
        "--fold", type=int, help="train on the other folds, validate on this one (split.folds)"
    )
    sub.add_parser(
        "crossval", help="aggregate the fold models of one experiment (crossval.experiments)"
    ).add_argument("experiment")
    sub.add_parser("check", help="validate params.yaml and exit")
    sub.add_parser("evaluate", help="score one experiment on the test set").add_argument(
        "experiment"
    )
    sub.add_parser("report", help="write reports/report.md across all experiments")
    diff = sub.add_parser("diff", help="Markdown of param and metric changes since a git revision")
    diff.add_argument("base_rev", metavar="base-rev", help="git revision to compare with")
    diff.add_argument("-o", "--output", type=Path, help="write here instead of stdout")
    diff.add_argument("--plots-url", help="link to the rendered `dvc plots diff` (e.g. a CI run)")
    sub.add_parser("select", help="copy a dataset's best experiment to its champion").add_argument(
        "dataset"
    )
    _add_registry_parser(sub)
    _accept_params_after_subcommand(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return _run(args)
    except AtelierError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _add_registry_parser(sub) -> None:
    """`registry register|promote|release|rollback|show|get`: see pipeline/registry.py."""
    registry = sub.add_parser("registry", help="version, promote and fetch champions (GTO)")
    commands = registry.add_subparsers(dest="registry_command", required=True)
    commands.add_parser("register", help="register the champion at HEAD").add_argument("artifact")
    promote = commands.add_parser("promote", help="assign a stage if the rules pass")
    promote.add_argument("artifact")
    promote.add_argument("--to", required=True, choices=("staging", "prod"), dest="stage")
    promote.add_argument("--version", help="default: the latest version")
    promote.add_argument("--force", action="store_true", help="promote despite failed rules")
    release = commands.add_parser("release", help="register, then promote as far as rules allow")
    release.add_argument("artifact")
    rollback = commands.add_parser("rollback", help="give a stage back to its previous holder")
    rollback.add_argument("artifact")
    rollback.add_argument("--stage", required=True, choices=("staging", "prod"))
    show = commands.add_parser("show", help="versions, stages and metrics")
    show.add_argument("artifact", nargs="?")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    get = commands.add_parser("get", help="write a version's model file and card.json")
    get.add_argument("artifact")
    which = get.add_mutually_exclusive_group(required=True)
    which.add_argument("--stage", choices=("staging", "prod"))
    which.add_argument("--version")
    get.add_argument("-o", "--output", type=Path, required=True, help="directory to write to")


def _accept_params_after_subcommand(sub) -> None:
    """Let `--params FILE` follow the subcommand too (`python -m pipeline check --params F`)."""
    for subparser in sub.choices.values():
        if not any("--params" in action.option_strings for action in subparser._actions):
            subparser.add_argument("--params", type=Path, default=argparse.SUPPRESS)


def _run(args: argparse.Namespace) -> int:
    from pipeline.data.catalog import get_dataset
    from pipeline.params import load_params

    params = load_params(args.params)
    if args.command == "check":
        print(f"{args.params}: OK ({len(params.experiments)} experiments)")
        return 0
    if args.command in ("download", "preprocess", "split"):
        spec = get_dataset(args.dataset)
        if spec.name not in params.data.datasets:
            raise AtelierError(
                f"Dataset {spec.name!r} is not in params.yaml data.datasets "
                f"{params.data.datasets}; add it there first."
            )
    if args.command == "download":
        from pipeline.stages.download import DownloadSettings, download

        settings = DownloadSettings(
            mirrors=tuple(params.data.mirrors),
            timeout_s=params.data.timeout_s,
            retries=params.data.retries,
        )
        download(spec, paths.raw_dir(spec.name), settings)
    elif args.command == "preprocess":
        from pipeline.stages.preprocess import PreprocessSettings, preprocess

        settings = PreprocessSettings(
            seed=params.base.seed, test_fraction=params.data.test_fraction
        )
        preprocess(
            spec,
            raw_dir=paths.raw_dir(spec.name),
            out_dir=paths.prepared_dir(spec.name),
            settings=settings,
        )
    elif args.command == "split":
        from pipeline.stages.split import SplitSettings, split

        settings = SplitSettings(
            val_fraction=params.split.val_fraction, folds=params.split.folds, seed=params.base.seed
        )
        split(
            prepared_dir=paths.prepared_dir(spec.name),
            out_dir=paths.split_dir(spec.name),
            settings=settings,
        )
    elif args.command == "train":
        from pipeline.stages.train import train_experiment

        train_experiment(params, args.experiment, root=Path("."), fold=args.fold)
    elif args.command == "crossval":
        from pipeline.tasks.regression import crossval_experiment

        crossval_experiment(params, args.experiment, root=Path("."))
    elif args.command == "evaluate":
        from pipeline.stages.evaluate import evaluate_experiment

        evaluate_experiment(params, args.experiment, root=Path("."))
    elif args.command == "report":
        from pipeline.stages.report import build_report

        build_report(params, root=Path("."))
    elif args.command == "diff":
        from pipeline.stages.diff import write_diff

        write_diff(
            args.base_rev,
            root=Path("."),
            output=args.output,
            plots_url=args.plots_url,
            experiments=list(params.experiments),
        )
    elif args.command == "select":
        from pipeline.stages.select import select

        spec = get_dataset(args.dataset)
        select(params, spec.name, root=Path("."))
    elif args.command == "registry":
        return _run_registry(args, params)
    return 0


def _run_registry(args: argparse.Namespace, params) -> int:
    from pipeline import registry as reg

    registry = reg.Registry(Path("."), params)
    command = args.registry_command
    if command == "register":
        version = registry.register(args.artifact)
        print(f"Registered {version.artifact} {version.version} at {version.commit[:7]}")
    elif command == "promote":
        # A refusal is a PromotionRefused whose message lists every rule with its figure.
        promotion = registry.promote(
            args.artifact, args.stage, version=args.version, force=args.force
        )
        print(reg.format_promotion(promotion))
    elif command == "release":
        print(reg.format_release(registry.release(args.artifact)))
    elif command == "rollback":
        done = registry.rollback(args.artifact, args.stage)
        print(f"{done.artifact} {done.stage}: {done.from_version} -> {done.to_version}")
    elif command == "show":
        state = registry.show(args.artifact)
        print(json.dumps(state, indent=2) if args.json else reg.format_show(state))
    elif command == "get":
        path = registry.get(args.artifact, args.output, stage=args.stage, version=args.version)
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
