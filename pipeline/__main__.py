"""The stage CLI that dvc.yaml calls: `python -m pipeline <stage> [item]`.

It parses `params.yaml` once into the typed `Params`, builds paths, and calls the stage
function. A user mistake (`AtelierError`) is printed as one message, without a traceback, and
the process exits with status 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from pipeline import paths
from pipeline.errors import AtelierError

STAGES = ("download", "preprocess", "split", "train", "evaluate", "report")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline", description=__doc__)
    parser.add_argument("--params", type=Path, default=paths.PARAMS_FILE)
    sub = parser.add_subparsers(dest="command", required=True)
    for stage in ("download", "preprocess", "split"):
        sub.add_parser(stage, help=f"{stage} stage for one dataset").add_argument("dataset")
    sub.add_parser("train", help="train one experiment").add_argument("experiment")
    sub.add_parser("check", help="validate params.yaml and exit")
    _accept_params_after_subcommand(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return _run(args)
    except AtelierError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _accept_params_after_subcommand(sub) -> None:
    """Let `--params FILE` follow the subcommand too (`python -m pipeline check --params F`)."""
    for subparser in sub.choices.values():
        if not any("--params" in action.option_strings for action in subparser._actions):
            subparser.add_argument("--params", type=Path, default=argparse.SUPPRESS)


def _run(args: argparse.Namespace) -> int:
    from pipeline.datasets import get_dataset
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
        from pipeline.download import DownloadSettings, download

        settings = DownloadSettings(
            mirrors=tuple(params.data.mirrors),
            timeout_s=params.data.timeout_s,
            retries=params.data.retries,
        )
        download(spec, paths.raw_dir(spec.name), settings)
    elif args.command == "preprocess":
        from pipeline.preprocess import PreprocessSettings, preprocess

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
        from pipeline.split import SplitSettings, split

        settings = SplitSettings(
            val_fraction=params.split.val_fraction, folds=params.split.folds, seed=params.base.seed
        )
        split(
            prepared_dir=paths.prepared_dir(spec.name),
            out_dir=paths.split_dir(spec.name),
            settings=settings,
        )
    elif args.command == "train":
        from pipeline.train import train_experiment

        train_experiment(params, args.experiment, root=Path("."))
    return 0


if __name__ == "__main__":
    sys.exit(main())
