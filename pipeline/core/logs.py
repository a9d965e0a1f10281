"""One logging setup for every entry point: each line starts with its local time, ISO 8601.

    2025-03-14T09:26:53+0100 INFO pipeline.stages.train: fashion_cnn: epoch 1/1 40% ...

A line's time tells how long a step took and lines up with DVC's and Prefect's own logs, which
run in other processes. `-q` keeps warnings and errors only; `-v` adds debug lines.
"""

from __future__ import annotations

import logging

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
DATE_FORMAT = "%Y-%m-%dT%H:%M:%S%z"


def level_for(verbose: int = 0, quiet: int = 0) -> int:
    """INFO by default; each `-v` one level more detailed, each `-q` one level less."""
    steps = (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR)
    index = min(max(1 - verbose + quiet, 0), len(steps) - 1)
    return steps[index]


def setup_logging(verbose: int = 0, quiet: int = 0) -> None:
    """Send log lines to stderr with their time stamp, at the level `-v`/`-q` ask for.

    The handler is added only when the root logger has none (a host such as pytest or a
    Prefect worker keeps its own); the level is set either way.
    """
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(FORMAT, DATE_FORMAT))
        root.addHandler(handler)
    root.setLevel(level_for(verbose, quiet))
    # JAX says at INFO that it found no TPU on every start: only a warning of its is news.
    logging.getLogger("jax._src.xla_bridge").setLevel(max(root.level, logging.WARNING))


def format_duration(seconds: float) -> str:
    """`8.4 s`, `2 min 05 s`, `1 h 03 min`: a duration as a person reads it in a log line."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"
