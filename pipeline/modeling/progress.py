"""Training progress a person can follow: Keras' bar on a terminal, log lines elsewhere.

On a terminal, `fit(verbose=1)` draws Keras' progress bar. Under DVC, a Prefect worker or CI,
stdout is a pipe: the bar would come out as one endless line, and `verbose=2` says nothing until
an epoch ends (the CNN's takes a minute and a half on two cores). There the callback logs one line
per epoch and, for an epoch longer than about 10 s, a line every ~10 % of its batches with the
rate and the time left:

    fashion_cnn: epoch 1/1 30% (141/469 batches), 5.2 batches/s, 1 min 03 s left
    fashion_cnn: epoch 1/1 done in 1 min 31 s: loss 0.4132, accuracy 0.8517, val_loss ...

Usage (the callback says which `verbose` goes with it):

    progress = training_progress("fashion_cnn")
    model.fit(..., callbacks=[progress, ...], verbose=progress.fit_verbose)

Importing this module does not import Keras: the Keras class is made when the first callback is.
"""

from __future__ import annotations

import functools
import logging
import sys
import time

from pipeline.core.logs import format_duration

log = logging.getLogger(__name__)

LONG_EPOCH_S = 10.0  # epochs expected to take longer get lines within the epoch
TENTHS = 10  # ... one every tenth of the epoch's batches


def is_terminal(stream=None) -> bool:
    """Whether `stream` (default: stdout) is a terminal, where Keras' progress bar is readable."""
    stream = sys.stdout if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def training_progress(
    run: str, *, interactive: bool | None = None, long_epoch_s: float = LONG_EPOCH_S
):
    """A Keras callback that reports `run`'s training; pass `fit(verbose=callback.fit_verbose)`.

    Args:
        run: the name the lines start with (an experiment, or `<experiment>-fold<k>`).
        interactive: Keras' progress bar (True) or log lines (False); default: whether stdout
            is a terminal.
        long_epoch_s: an epoch expected to take longer gets a line every tenth of its batches.
    """
    return _callback_class()(run, interactive=interactive, long_epoch_s=long_epoch_s)


@functools.cache
def _callback_class() -> type:
    import keras

    return type("TrainingProgress", (_EpochProgress, keras.callbacks.Callback), {})


class _EpochProgress:
    """What `TrainingProgress` does, mixed into `keras.callbacks.Callback` at call time."""

    # It only reads the clock, so Keras may keep dispatching batch callbacks asynchronously.
    async_safe = True

    def __init__(self, run: str, *, interactive: bool | None, long_epoch_s: float) -> None:
        super().__init__()
        self.run = run
        self.interactive = is_terminal() if interactive is None else interactive
        self.fit_verbose = 1 if self.interactive else 0
        self.long_epoch_s = long_epoch_s
        self._epoch_seconds: list[float] = []
        self._epoch = 0
        self._started = self._last_line = time.perf_counter()
        self._next_tenth = 1
        self._first: tuple[int, float] | None = None

    def _totals(self) -> tuple[int, int | None]:
        params = self.params or {}
        return int(params.get("epochs") or 0), params.get("steps")

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._started = self._last_line = time.perf_counter()
        self._next_tenth = 1
        self._first = None

    def on_train_batch_end(self, batch, logs=None):
        if self.interactive:
            return
        epochs, steps = self._totals()
        done, now = batch + 1, time.perf_counter()
        rate = self._rate(done, now)
        where = f"{self.run}: epoch {self._epoch + 1}/{epochs}"
        if not steps:  # a dataset of unknown length: a line every `long_epoch_s` instead
            if now - self._last_line >= self.long_epoch_s:
                self._last_line = now
                log.info("%s, %d batches, %.1f batches/s", where, done, rate)
            return
        if done >= steps or done * TENTHS < self._next_tenth * steps:
            return
        self._next_tenth = done * TENTHS // steps + 1
        if steps / rate < self.long_epoch_s:
            return
        log.info(
            "%s %d%% (%d/%d batches), %.1f batches/s, %s left",
            where,
            done * 100 // steps,
            done,
            steps,
            rate,
            format_duration((steps - done) / rate),
        )

    def _rate(self, done: int, now: float) -> float:
        """Batches per second since the epoch's first report, which carries the compilation
        of the first epoch; from the epoch's start until there is a second report."""
        if self._first is None:
            self._first = (done, now)
        first_done, first_time = self._first
        if done > first_done and now > first_time:
            return (done - first_done) / (now - first_time)
        return done / max(now - self._started, 1e-9)

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self._started
        self._epoch_seconds.append(seconds)
        if self.interactive:
            return
        epochs, _ = self._totals()
        figures = ", ".join(f"{key} {float(value):.4f}" for key, value in (logs or {}).items())
        remaining = epochs - epoch - 1
        mean = sum(self._epoch_seconds) / len(self._epoch_seconds)
        more = (
            f"; at most {remaining} more epoch{'s' if remaining > 1 else ''}, "
            f"about {format_duration(mean * remaining)}"
            if remaining > 0
            else ""
        )
        log.info(
            "%s: epoch %d/%d done in %s: %s%s",
            self.run,
            epoch + 1,
            epochs,
            format_duration(seconds),
            figures,
            more,
        )
