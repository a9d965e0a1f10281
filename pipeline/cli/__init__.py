"""The `atelier` command line: its parser, and help that answers the next question.

The commands: the pipeline's stages (what dvc.yaml runs as `python -m pipeline <stage>`, the
same command), `check`, `diff`, `where`, `sets` (the built-in experiment sets), the model
registry, and the Prefect flows.
`pipeline/__main__.py` runs them; nothing here imports a stage, so building the parser (and the
flows' `--help`, which uses `HelpParser` and `Listing`) never reaches TensorFlow.

What the help lists (experiments, datasets, models, registry artifacts) is read from the params
file and the catalog only when help is shown; when the file cannot be read, help says so.
"""

from __future__ import annotations

import argparse
import difflib
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

from pipeline.cli.listing import REGISTRY_STAGES, Listing
from pipeline.cli.summary import where
from pipeline.core import paths
from pipeline.core.errors import AtelierError

FLOWS = {
    "training": (
        "flows.training",
        "the DVC pipeline as a Prefect flow, with retries and artifacts",
    ),
    "sweep": ("flows.sweep", "a grid of param overrides, each point a DVC experiment"),
}

DESCRIPTION = """\
Train, evaluate and ship the Keras experiments of params.yaml.

The stage commands are what `dvc repro` runs (dvc.yaml calls `python -m pipeline <stage>`, the
same command): run one by hand to debug it, `make repro` or `dvc repro` to run what changed.
`%(prog)s <command> --help` says what a command takes and lists what exists."""


class HelpParser(argparse.ArgumentParser):
    """An `ArgumentParser` whose epilog is built when its help is shown, not when it is made.

    `epilog_from` (a callable returning text) reads `params.yaml`: a command that is run, not
    asked for help, never pays for it. Descriptions and epilogs keep their line breaks.
    """

    def __init__(self, *args, epilog_from: Callable[[], str] | None = None, **kwargs) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)
        self.epilog_from = epilog_from

    def format_help(self) -> str:
        if self.epilog_from is not None:
            self.epilog = self.epilog_from()
        return super().format_help()


# --- what exists: params.yaml and the catalog ---------------------------------------------------


# --- the parser ----------------------------------------------------------------------------------


def build_parser(prog: str, listing: Listing) -> HelpParser:
    """The whole command line; help text that lists things reads them through `listing`."""
    parser = HelpParser(
        prog=prog, description=DESCRIPTION, epilog_from=lambda: listing.summary(prog)
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    _add_common_options(parser, default=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="<command>")
    _add_stage_parsers(sub, listing)
    _add_tool_parsers(sub, listing)
    _add_sets_parser(sub, listing)
    _add_registry_parser(sub, listing)
    _add_flow_parsers(sub)
    for name, subparser in sub.choices.items():
        if name not in ("flow", "deploy"):
            _add_common_options(subparser, default=False)
    return parser


def _version() -> str:
    try:
        return metadata.version("atelier")
    except metadata.PackageNotFoundError:
        return "(not installed: pip install -e .)"


def _add_common_options(parser: argparse.ArgumentParser, *, default: bool) -> None:
    """`--params`, `-v`, `-q`: before the command, or after it (`atelier check --params F`)."""

    def given(value):
        return value if default else argparse.SUPPRESS

    parser.add_argument(
        "--params",
        type=Path,
        default=given(paths.PARAMS_FILE),
        metavar="FILE",
        help="the params file to read (default: params.yaml in the current directory)",
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=given(0), help="more log lines (debug)"
    )
    parser.add_argument(
        "-q", "--quiet", action="count", default=given(0), help="warnings and errors only"
    )


def _add_stage_parsers(sub, listing: Listing) -> None:
    dataset_help = "a dataset of params.yaml data.datasets (listed below)"
    for stage, what in (
        ("download", "fetch a dataset's files into data/raw/<dataset>/, each one verified"),
        ("preprocess", "decode a dataset into arrays in data/prepared/<dataset>/"),
        ("split", "split off validation rows (and K folds) into data/split/<dataset>/"),
    ):
        stage_parser = sub.add_parser(
            stage, help=what, description=what, epilog_from=listing.datasets
        )
        stage_parser.add_argument("dataset", help=dataset_help)
    experiment_help = "an experiment of params.yaml `experiments` (listed below)"
    train = sub.add_parser(
        "train",
        help="train one experiment into models/<experiment>/",
        description="Train one experiment; its best epoch goes to models/<experiment>/.\n"
        "On a terminal Keras draws its progress bar; elsewhere (DVC, Prefect, CI) each epoch\n"
        "logs a line, and a long epoch one every ~10 % of its batches with the time left.",
        epilog_from=lambda: listing.experiments() + "\n\n" + listing.models(),
    )
    train.add_argument("experiment", help=experiment_help)
    train.add_argument(
        "--fold",
        type=int,
        metavar="K",
        help="train on every fold but K and validate on fold K, into models/folds/ "
        "(split.folds; for crossval.experiments)",
    )
    crossval = sub.add_parser(
        "crossval",
        help="aggregate the fold models of one experiment (crossval.experiments)",
        epilog_from=listing.experiments,
    )
    crossval.add_argument("experiment", help="an experiment of crossval.experiments")
    evaluate = sub.add_parser(
        "evaluate",
        help="score one experiment on the test set into metrics/ and plots/",
        epilog_from=listing.experiments,
    )
    evaluate.add_argument("experiment", help=experiment_help)
    sub.add_parser("report", help="write reports/report.md across all experiments")
    select = sub.add_parser(
        "select",
        help="copy a dataset's best experiment to models/champions/<dataset>/",
        epilog_from=listing.datasets,
    )
    select.add_argument("dataset", help=dataset_help)


def _add_tool_parsers(sub, listing: Listing) -> None:
    sub.add_parser(
        "check",
        help="validate params.yaml and exit (make repro runs it before dvc repro)",
        epilog_from=listing.summary,
    )
    diff = sub.add_parser("diff", help="Markdown of param and metric changes since a git revision")
    diff.add_argument(
        "base_rev", metavar="base-rev", help="git revision to compare with (e.g. main)"
    )
    diff.add_argument("-o", "--output", type=Path, help="write here instead of stdout")
    diff.add_argument("--plots-url", help="link to the rendered `dvc plots diff` (e.g. a CI run)")
    diff.add_argument(
        "--fail-on-regression",
        action="store_true",
        help="exit 1 when a headline metric is worse than at base-rev beyond its tolerance "
        "(diff.tolerance in params.yaml); exit 2 when base-rev has no metrics",
    )
    sub.add_parser(
        "where",
        help="where to look after a run: the report, the champions, the plots",
        description="Print where the last run's results are (make repro ends with this).",
    )


def _add_sets_parser(sub, listing: Listing) -> None:
    """`sets`, `sets enable NAME`, `sets disable NAME`: the built-in experiment sets."""
    sets = sub.add_parser(
        "sets",
        help="list the built-in experiment sets; enable or disable one in params.yaml",
        description="List the built-in experiment sets (pipeline/params/sets.yaml), marking the "
        "ones params.yaml enables;\n`enable`/`disable` add a set to params.yaml or remove it, "
        "keeping the rest of the file as it is.",
        epilog_from=listing.sets,
    )
    commands = sets.add_subparsers(dest="sets_command", metavar="<sets command>")
    for verb, what in (
        ("enable", "add a set's experiments, dataset(s) and K-fold entries to params.yaml"),
        ("disable", "remove a set's experiments from params.yaml, and what only they used"),
    ):
        command = commands.add_parser(verb, help=what, description=what, epilog_from=listing.sets)
        command.add_argument("name", metavar="NAME", help="an experiment set (listed below)")
        _add_common_options(command, default=False)


def _add_registry_parser(sub, listing: Listing) -> None:
    """`registry register|promote|release|rollback|show|get`: see pipeline/registry/.

    Every subcommand that reads a version's files checks them against dvc.lock first.
    """
    registry = sub.add_parser(
        "registry",
        help="version, promote and fetch champions (GTO)",
        epilog_from=listing.artifacts,
    )
    commands = registry.add_subparsers(
        dest="registry_command", required=True, metavar="<registry command>"
    )

    def command(name: str, what: str) -> argparse.ArgumentParser:
        return commands.add_parser(name, help=what, description=what, epilog_from=listing.artifacts)

    artifact = "a registry artifact (listed below)"
    command("register", "register the champion at HEAD").add_argument("artifact", help=artifact)
    promote = command("promote", "assign a stage if the rules pass")
    promote.add_argument("artifact", help=artifact)
    promote.add_argument(
        "--to", required=True, choices=REGISTRY_STAGES, dest="stage", help="the stage to assign"
    )
    promote.add_argument("--version", help="default: the latest version")
    promote.add_argument("--force", action="store_true", help="promote despite failed rules")
    release = command("release", "register, then promote as far as rules allow")
    release.add_argument("artifact", help=artifact)
    rollback = command("rollback", "give a stage back to its previous holder")
    rollback.add_argument("artifact", help=artifact)
    rollback.add_argument(
        "--stage", required=True, choices=REGISTRY_STAGES, help="the stage to give back"
    )
    show = command("show", "versions, stages and verified metrics (a tampered version is marked)")
    show.add_argument("artifact", nargs="?", help=f"{artifact}; default: every artifact")
    show.add_argument("--json", action="store_true", help="machine-readable output")
    get = command("get", "write a version's model file and card.json")
    get.add_argument("artifact", help=artifact)
    which = get.add_mutually_exclusive_group(required=True)
    which.add_argument("--stage", choices=REGISTRY_STAGES, help="the version holding this stage")
    which.add_argument("--version", help="this version (e.g. v0.2.0)")
    get.add_argument("-o", "--output", type=Path, required=True, help="directory to write to")


def _add_flow_parsers(sub) -> None:
    """`flow training|sweep ARGS` and `deploy ARGS`: ARGS go to the flow's own command line.

    Their parsers take every argument as it is (`prefix_chars="+"` leaves `-e x` unparsed), so
    the flow's own `--help` answers; Prefect is imported only then.
    """
    flow = sub.add_parser(
        "flow",
        help="run a Prefect flow: training or sweep (`flow training --help`)",
        description="Run a Prefect flow locally (Prefect starts a temporary server when "
        "PREFECT_API_URL is not set).",
    )
    flows = flow.add_subparsers(dest="flow", required=True, metavar="<flow>")
    for name, (_, what) in FLOWS.items():
        flow_parser = flows.add_parser(name, help=what, add_help=False, prefix_chars="+")
        flow_parser.add_argument("args", nargs=argparse.REMAINDER, help=f"see `flow {name} --help`")
    deploy = sub.add_parser(
        "deploy",
        help="deploy prefect.yaml's deployments after checking their work pools",
        add_help=False,
        prefix_chars="+",
    )
    deploy.add_argument("args", nargs=argparse.REMAINDER, help="see `deploy --help`")


# --- names the commands take ---------------------------------------------------------------


def params_file(argv: list[str]) -> Path:
    """The `--params` of `argv`, read before parsing so that help lists what that file says."""
    for index, arg in enumerate(argv):
        if arg in ("flow", "deploy"):
            break
        if arg == "--params" and index + 1 < len(argv):
            return Path(argv[index + 1])
        if arg.startswith("--params="):
            return Path(arg.partition("=")[2])
    return paths.PARAMS_FILE


def require_experiment(params, name: str) -> None:
    """Refuse an experiment that `params` does not define, listing those it does."""
    if name in params.experiments:
        return
    from pipeline.params.sets import load_sets, set_of

    defined = sorted(params.experiments)
    close = difflib.get_close_matches(name, defined, n=1)
    found = set_of(name, load_sets())
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    if found is not None:
        fix = (
            f"{name!r} is in experiment set {found.name!r}, which is not enabled: "
            f"`atelier sets enable {found.name}` adds its experiments to params.yaml."
        )
    else:
        fix = "Add it under `experiments:` or pick one of those."
    raise AtelierError(
        f"Unknown experiment {name!r}: params.yaml defines {', '.join(defined) or 'none'}"
        f"{hint}. {fix}"
    )


__all__ = [
    "FLOWS",
    "HelpParser",
    "Listing",
    "build_parser",
    "params_file",
    "require_experiment",
    "where",
]
