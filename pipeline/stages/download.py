"""Download stage: fetch a dataset's files from the first source that has them intact.

Sources are tried in order: the user's mirror directories (`data.mirrors`), then the catalog's
own (local directories, then HTTP(S) base URLs). HTTP goes through urllib3 with connect/read
timeouts and retries with exponential backoff on connection errors and 5xx/429 (honouring
`Retry-After`); a 404 is not retried. Every file is verified by the SHA-256 of its decompressed
payload. The dataset directory appears only when every file is verified: files are written under
a temporary directory that is renamed at the end, so an interrupted or failed download leaves
nothing that looks finished.

Every HTTP download is bounded in time and size (see `Limits`): a server that drips bytes or
streams a body larger than the catalog's file is cut off, and the next source tried. A staging
directory left by a process that was killed outright is removed by the next download of that
dataset (`remove_stale_partials`).
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import re
import shutil
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import urllib3
from urllib3.exceptions import HTTPError, MaxRetryError, ReadTimeoutError
from urllib3.util import Retry, Timeout

from pipeline.core.errors import DataError
from pipeline.core.io import atomic_dir
from pipeline.core.logs import format_duration
from pipeline.core.processes import alive, host, owner_tag
from pipeline.data.catalog import DatasetSpec, FileSpec

log = logging.getLogger(__name__)

CHUNK = 1 << 20
RETRY_STATUSES = (429, 500, 502, 503, 504)

# The bounds of one HTTP download of one file (README: "Bounded downloads").
# Deadline: `data.timeout_s` (connecting, first bytes) plus the catalog's size at MIN_RATE.
# 256 kB/s (about 2 Mbit/s) is far below any link one would fetch training data over, so an
# honest server never meets the deadline, while a stalled or dripping one is cut off after
# minutes, not hours: Fashion-MNIST's largest file gets 30 s + 179 s. The catalog records the
# payload size, larger than a published `.gz`, which only makes the deadline more lenient.
MIN_RATE = 256 * 1024  # bytes per second
UNSIZED = 64 << 20  # the size assumed for the deadline of a file the catalog gives no size
# Size cap: the payload size + 1 % + 64 KiB. gzip never grows a payload by more than 5 bytes per
# 64 KiB block plus its header, so the cap holds however a source compressed the pinned payload
# (Debian recompresses), and a body that is not the catalog's file is cut one chunk past it.
CAP_MARGIN = 64 * 1024


@dataclass(frozen=True)
class DownloadSettings:
    mirrors: tuple[str, ...] = ()
    timeout_s: float = 30.0
    retries: int = 3
    backoff_factor: float = 0.5
    backoff_max_s: float = 15.0


class SourceFailure(Exception):
    """One source could not supply one file; the message says why, `hint` what might help."""

    def __init__(self, message: str, *, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint


@dataclass(frozen=True)
class Limits:
    """How long one HTTP download of one file may take and how many bytes it may bring."""

    timeout_s: float  # per connect and per read, as `data.timeout_s`
    deadline_s: float  # from the first request to the last byte
    size: int | None  # the catalog's payload size
    cap: int | None  # bytes beyond which the body cannot be the catalog's file

    @classmethod
    def for_file(cls, file: FileSpec, timeout_s: float) -> Limits:
        size = file.size
        deadline_s = timeout_s + (UNSIZED if size is None else size) / MIN_RATE
        cap = None if size is None else size + size // 100 + CAP_MARGIN
        return cls(timeout_s, deadline_s, size, cap)

    def too_slow(self, received: int) -> SourceFailure:
        basis = "an unknown size" if self.size is None else f"{self.size} bytes"
        return SourceFailure(
            f"too slow: {received} bytes received when the deadline of {self.deadline_s:.1f} s "
            f"passed (data.timeout_s {self.timeout_s:g} s + {basis} at {MIN_RATE // 1024} kB/s)",
            hint=f"if a source is only slow, raise params.yaml `data.timeout_s` (now "
            f"{self.timeout_s:g} s; a file may take that plus its size at {MIN_RATE // 1024} kB/s)",
        )

    def too_big(self, what: str) -> SourceFailure:
        return SourceFailure(
            f"refused {what} exceeds the cap of {self.cap} bytes (the catalog's size "
            f"{self.size} bytes + 1 % + 64 KiB), so it is not the published file"
        )


def payload_sha256(path: Path) -> str:
    """SHA-256 of the file's payload: its decompressed bytes for `.gz`, else the bytes."""
    digest = hashlib.sha256()
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as stream:
            while chunk := stream.read(CHUNK):
                digest.update(chunk)
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise SourceFailure(f"truncated or corrupt gzip ({exc})") from None
    return digest.hexdigest()


def download(spec: DatasetSpec, out_dir: Path, settings: DownloadSettings) -> Path:
    """Fetch every file of `spec` into `out_dir`, verified; return `out_dir`.

    Raises:
        DataError: when some file could not be had from any source; the message lists each
            source tried and why it failed, and how to get the data.
    """
    remove_stale_partials(out_dir)
    if "label_csv" in spec.extra:
        return copy_label_table(spec, out_dir, settings)
    sources = [*settings.mirrors, *spec.sources]
    http = _pool(settings)
    try:
        with atomic_dir(out_dir, owner=owner_tag()) as staging:
            for file in spec.files:
                limits = Limits.for_file(file, settings.timeout_s)
                _fetch_file(file, sources, staging / file.name, http, spec, limits)
    finally:
        http.clear()
    log.info("%s: %d file(s) verified in %s", spec.name, len(spec.files), out_dir)
    return out_dir


class _CappedRetry(Retry):
    """Honours `Retry-After` up to `backoff_max`: urllib3 would wait up to six hours per try."""

    def parse_retry_after(self, retry_after: str) -> float:
        return min(super().parse_retry_after(retry_after), self.backoff_max)


def _pool(settings: DownloadSettings) -> urllib3.PoolManager:
    retry = _CappedRetry(
        total=settings.retries,
        connect=settings.retries,
        read=settings.retries,
        status=settings.retries,
        other=0,
        backoff_factor=settings.backoff_factor,
        backoff_max=settings.backoff_max_s,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=frozenset({"GET"}),
        respect_retry_after_header=True,
        raise_on_status=True,
    )
    timeout = Timeout(connect=settings.timeout_s, read=settings.timeout_s)
    return urllib3.PoolManager(retries=retry, timeout=timeout, headers={"User-Agent": "atelier"})


def _fetch_file(
    file: FileSpec,
    sources: Sequence[str],
    target: Path,
    http: urllib3.PoolManager,
    spec: DatasetSpec,
    limits: Limits,
) -> None:
    failures: list[str] = []
    hints: list[str] = []
    for source in sources:
        location = _location(source, file.name)
        try:
            if _is_url(source):
                _http_get(http, location, target, limits)
            else:
                _copy_local(Path(location), target)
            digest = payload_sha256(target)
            if digest != file.sha256:
                raise SourceFailure(f"payload SHA-256 {digest[:12]}… != pinned {file.sha256[:12]}…")
        except SourceFailure as exc:
            target.unlink(missing_ok=True)
            failures.append(f"{location}: {exc}")
            if exc.hint and exc.hint not in hints:
                hints.append(exc.hint)
            log.warning("%s: %s", location, exc)
            continue
        log.info("%s: verified from %s", file.name, location)
        return
    raise DataError(
        f"Could not get {file.name} of dataset {spec.name!r} from any source:\n"
        + "\n".join(f"  - {failure}" for failure in failures)
        + f"\nTo fix: {spec.how_to_get or 'make one of the sources above reachable'}; "
        "or put the files in a directory and list it in params.yaml `data.mirrors`"
        + "".join(f"; or, {hint}" for hint in hints)
        + "."
    )


def _is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def _location(source: str, name: str) -> str:
    return f"{source.rstrip('/')}/{name}" if _is_url(source) else str(Path(source) / name)


def _copy_local(path: Path, target: Path) -> None:
    if not path.is_file():
        raise SourceFailure("no such file")
    try:
        shutil.copyfile(path, target)
    except OSError as exc:
        raise SourceFailure(f"cannot copy ({exc.strerror})") from None


def _http_get(http: urllib3.PoolManager, url: str, target: Path, limits: Limits) -> None:
    """GET `url` into `target` within `limits`; the pool retries the request as configured,
    and the deadline counts from the first try."""
    deadline = time.monotonic() + limits.deadline_s
    try:
        response = http.request("GET", url, preload_content=False)
    except MaxRetryError as exc:
        raise SourceFailure(f"gave up after retries: {_reason(exc.reason)}") from None
    except HTTPError as exc:
        raise SourceFailure(_reason(exc)) from None
    whole = False
    try:
        if response.status != 200:
            raise SourceFailure(f"HTTP {response.status} {response.reason or ''}".strip())
        announced = response.headers.get("Content-Length", "")
        if limits.cap is not None and announced.isdigit() and int(announced) > limits.cap:
            raise limits.too_big(f"before reading: Content-Length {announced} bytes")
        _read_body(response, target, limits, deadline)
        whole = True
    except HTTPError as exc:
        raise SourceFailure(f"transfer failed: {_reason(exc)}") from None
    finally:
        if not whole:
            response.close()  # drop the connection: the rest of the body is not wanted
        response.release_conn()


def _read_body(response, target: Path, limits: Limits, deadline: float) -> None:
    """Write the body to `target` as it arrives, checking the deadline and cap at every read.

    `read1` returns whatever has arrived, so a drip cannot hold a read for long; the socket's
    timeout is shortened to what is left before the deadline, so no read outlasts it either.
    """
    received = 0
    progress = _Progress(target.name, response.headers.get("Content-Length", ""), limits.size)
    with open(target, "wb") as out:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise limits.too_slow(received)
            cut_by_deadline = left < limits.timeout_s
            _set_read_timeout(response, min(left, limits.timeout_s))
            try:
                chunk = response.read1(CHUNK)
            except ReadTimeoutError:
                if cut_by_deadline:
                    raise limits.too_slow(received) from None
                raise
            if not chunk:
                return
            received += len(chunk)
            if limits.cap is not None and received > limits.cap:
                raise limits.too_big(f"after {received} bytes: the body")
            out.write(chunk)
            progress.update(received)


PROGRESS_MIN_BYTES = 4 << 20  # a smaller file arrives before a progress line would help


class _Progress:
    """A log line about every 10 % of a download over `PROGRESS_MIN_BYTES`: rate, time left."""

    def __init__(self, name: str, announced: str, size: int | None) -> None:
        self.name = name
        # Content-Length counts the bytes sent; the catalog's size is the payload's (larger
        # when the body is gzipped), the best guess when a server announces nothing.
        self.total = int(announced) if announced.isdigit() else size
        self.started = time.monotonic()
        self.next_tenth = 1

    def update(self, received: int) -> None:
        total = self.total
        if not total or total < PROGRESS_MIN_BYTES or received >= total:
            return
        if received * 10 < self.next_tenth * total:
            return
        self.next_tenth = received * 10 // total + 1
        rate = received / max(time.monotonic() - self.started, 1e-9)
        log.info(
            "%s: %d%% (%.1f of %.1f MB), %.1f MB/s, %s left",
            self.name,
            received * 100 // total,
            received / 1e6,
            total / 1e6,
            rate / 1e6,
            format_duration((total - received) / rate),
        )


def _set_read_timeout(response, seconds: float) -> None:
    sock = getattr(response.connection, "sock", None)
    if sock is not None:
        sock.settimeout(max(seconds, 0.001))  # urllib3 sets it afresh for the next request


def _reason(exc: BaseException | None) -> str:
    text = str(exc) if exc is not None else "unknown error"
    if "timed out" in text.lower():
        return f"timed out ({text})"
    return text


def remove_stale_partials(out_dir: Path) -> list[Path]:
    """Remove the staging directories of `out_dir` whose owner has died; return them.

    `atomic_dir` cleans up after any exception, but not after SIGKILL or a power cut. A staging
    directory made here carries `owner_tag()` in its name; it is removed only when that names
    this host and a PID that no process has any more, so the directory of a download running
    concurrently is never touched. One without an owner (older runs) is left alone.
    """
    pattern = re.compile(rf"\.{re.escape(out_dir.name)}\.partial-(\d+)@(.+)-[^-]+")
    parent = Path(out_dir).parent
    removed: list[Path] = []
    for path in sorted(parent.iterdir()) if parent.is_dir() else ():
        match = pattern.fullmatch(path.name)
        if match is None or match[2] != host() or alive(int(match[1])):
            continue
        shutil.rmtree(path, ignore_errors=True)
        log.info("%s: removed, left by process %s, which is gone", path, match[1])
        removed.append(path)
    return removed


def copy_label_table(spec: DatasetSpec, out_dir: Path, settings: DownloadSettings) -> Path:
    """A user's multi-label set: the first mirror directory holding `labels.csv` (directly or
    under `<dataset>/`), checked row by row, copied with its images into `out_dir`.

    The copy's `labels.csv` lists `images/<row>.<ext>`, so the dataset no longer depends on
    where the original lived. Nothing is written unless every row is valid.
    """
    import csv
    import io

    from pipeline.core.io import atomic_write_bytes
    from pipeline.data.labels import read_label_table

    name = spec.extra["label_csv"]
    tried = []
    for mirror in settings.mirrors:
        if _is_url(mirror):
            tried.append(f"{mirror}: an HTTP mirror (this dataset is copied from a directory)")
            continue
        candidates = [Path(mirror) / name, Path(mirror) / spec.name / name]
        found = next((path for path in candidates if path.is_file()), None)
        if found is None:
            tried.append(f"{mirror}: no {name} (nor {spec.name}/{name})")
            continue
        table = read_label_table(found, spec.class_names)
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["image", *table.label_names])
        with atomic_dir(out_dir, owner=owner_tag()) as staging:
            (staging / "images").mkdir()
            for row, (source, labels) in enumerate(zip(table.paths, table.labels, strict=True)):
                target = f"images/{row:05d}{Path(source).suffix.lower()}"
                shutil.copyfile(source, staging / target)
                writer.writerow([target, *(int(value) for value in labels)])
            atomic_write_bytes(staging / name, buffer.getvalue().encode())
        log.info("%s: %d images copied from %s", spec.name, len(table), found.parent)
        return out_dir
    raise DataError(
        f"Dataset {spec.name!r} has no copy in data.mirrors"
        + ("".join(f"\n  - {line}" for line in tried) if tried else " (the list is empty)")
        + f"\nTo fix: {spec.how_to_get}."
    )
