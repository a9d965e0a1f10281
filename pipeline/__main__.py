"""`python -m pipeline <command>` (what dvc.yaml calls) and the `atelier` command: run a command.

The parser and its help are `pipeline/cli/`; this module runs what was asked. It parses
`params.yaml` once into the typed `Params`, builds paths, and calls the stage function, imported
only then (TensorFlow only for the commands that train or score a Keras model, Prefect only for
`flow` and `deploy`). A user mistake (`AtelierError`) is printed as one message, without a
traceback, and the process exits with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Callable
from pathlib import Path

from pipeline.cli import FLOWS, Listing, build_parser, params_file, require_experiment, where
from pipeline.core import paths
from pipeline.core.errors import AtelierError
from pipeline.core.logs import setup_logging


def main(argv: list[str] | None = None, *, prog: str = "atelier") -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    listing = Listing(params_file(argv))
    parser = build_parser(prog, listing)
    args = parser.parse_args(argv)
    setup_logging(args.verbose, args.quiet)
    try:
        if args.command in ("flow", "deploy"):
            return _run_flow(args, prog)
        if args.command == "where":
            print(where())
            return 0
        if args.command == "sets":
            return _sets(args, listing)
        return _run(args)
    except AtelierError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


def _run_flow(args: argparse.Namespace, prog: str) -> int:
    """Hand the arguments to `flows.<name>.main`; `-v`/`-q` given before `flow` go along."""
    module, command = (
        (FLOWS[args.flow][0], f"flow {args.flow}")
        if args.command == "flow"
        else ("flows.deploy", "deploy")
    )
    forwarded = ["-v"] * args.verbose + ["-q"] * args.quiet if args.command == "flow" else []
    flow_main = importlib.import_module(module).main
    return flow_main([*forwarded, *args.args], prog=f"{prog} {command}")


def _sets(args: argparse.Namespace, listing: Listing) -> int:
    """`sets`: list the built-in experiment sets; `sets enable|disable NAME`: edit params.yaml."""
    if args.sets_command is None:
        print(listing.sets())
        return 0
    from pipeline.params.switch import disable_set, enable_set

    switch = enable_set if args.sets_command == "enable" else disable_set
    change = switch(args.name, args.params)
    print(change.describe())
    return 0


def _run(args: argparse.Namespace) -> int:
    from pipeline.params import load_params

    params = load_params(args.params)
    if args.command == "check":
        print(f"{args.params}: OK ({len(params.experiments)} experiments)")
        return 0
    if getattr(args, "experiment", None) is not None:
        require_experiment(params, args.experiment)
    return STAGE_HANDLERS[args.command](args, params) or 0


def _enabled_dataset(params, name: str):
    from pipeline.data.catalog import get_dataset

    spec = get_dataset(name)
    if spec.name not in params.data.datasets:
        raise AtelierError(
            f"Dataset {spec.name!r} is not in params.yaml data.datasets "
            f"{params.data.datasets}; add it there first."
        )
    return spec


def _download(args, params) -> None:
    from pipeline.stages.download import DownloadSettings, download

    spec = _enabled_dataset(params, args.dataset)
    settings = DownloadSettings(
        mirrors=tuple(params.data.mirrors),
        timeout_s=params.data.timeout_s,
        retries=params.data.retries,
    )
    download(spec, paths.raw_dir(spec.name), settings)


def _preprocess(args, params) -> None:
    from pipeline.stages.preprocess import PreprocessSettings, preprocess

    spec = _enabled_dataset(params, args.dataset)
    settings = PreprocessSettings(seed=params.base.seed, test_fraction=params.data.test_fraction)
    preprocess(
        spec,
        raw_dir=paths.raw_dir(spec.name),
        out_dir=paths.prepared_dir(spec.name),
        settings=settings,
        overview_dir=paths.overview_dir(spec.name),
    )


def _split(args, params) -> None:
    from pipeline.stages.split import SplitSettings, split

    spec = _enabled_dataset(params, args.dataset)
    settings = SplitSettings(
        val_fraction=params.split.val_fraction, folds=params.split.folds, seed=params.base.seed
    )
    split(
        prepared_dir=paths.prepared_dir(spec.name),
        out_dir=paths.split_dir(spec.name),
        settings=settings,
    )


def _train(args, params) -> None:
    from pipeline.stages.train import train_experiment

    train_experiment(params, args.experiment, root=Path("."), fold=args.fold)


def _crossval(args, params) -> None:
    from pipeline.stages.crossval import crossval_experiment

    crossval_experiment(params, args.experiment, root=Path("."))


def _evaluate(args, params) -> None:
    from pipeline.stages.evaluate import evaluate_experiment

    evaluate_experiment(params, args.experiment, root=Path("."))


def _report(args, params) -> None:
    from pipeline.stages.report import build_report

    build_report(params, root=Path("."))


def _diff(args, params) -> None:
    from pipeline.stages.diff import write_diff

    write_diff(
        args.base_rev,
        root=Path("."),
        output=args.output,
        plots_url=args.plots_url,
        experiments=list(params.experiments),
        fail_on_regression=args.fail_on_regression,
    )


def _select(args, params) -> None:
    from pipeline.data.catalog import get_dataset
    from pipeline.stages.select import select

    spec = get_dataset(args.dataset)
    select(params, spec.name, root=Path("."))


def _registry(args: argparse.Namespace, params) -> int:
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


STAGE_HANDLERS: dict[str, Callable[[argparse.Namespace, object], int | None]] = {
    "download": _download,
    "preprocess": _preprocess,
    "split": _split,
    "train": _train,
    "crossval": _crossval,
    "evaluate": _evaluate,
    "report": _report,
    "diff": _diff,
    "select": _select,
    "registry": _registry,
}


if __name__ == "__main__":
    sys.exit(main(prog="python -m pipeline"))
