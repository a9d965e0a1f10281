"""Download stage: fetch a dataset's files from the first source that has them intact.

Sources are tried in order: the user's mirror directories (`data.mirrors`), then the catalog's
own (local directories, then HTTP(S) base URLs). HTTP goes through urllib3 with connect/read
timeouts and retries with exponential backoff on connection errors and 5xx/429 (honouring
`Retry-After`); a 404 is not retried. Every file is verified by the SHA-256 of its decompressed
payload. The dataset directory appears only when every file is verified: files are written under
a temporary directory that is renamed at the end, so an interrupted or failed download leaves
nothing that looks finished.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import shutil
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import urllib3
from urllib3.exceptions import HTTPError, MaxRetryError
from urllib3.util import Retry, Timeout

from pipeline.data.catalog import DatasetSpec, FileSpec
from pipeline.core.errors import DataError
from pipeline.core.io import atomic_dir

log = logging.getLogger(__name__)

CHUNK = 1 << 20
RETRY_STATUSES = (429, 500, 502, 503, 504)


@dataclass(frozen=True)
class DownloadSettings:
    mirrors: tuple[str, ...] = ()
    timeout_s: float = 30.0
    retries: int = 3
    backoff_factor: float = 0.5
    backoff_max_s: float = 15.0


class SourceFailure(Exception):
    """One source could not supply one file; the message says why."""


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
    if "label_csv" in spec.extra:
        return copy_label_table(spec, out_dir, settings)
    sources = [*settings.mirrors, *spec.sources]
    http = _pool(settings)
    try:
        with atomic_dir(out_dir) as staging:
            for file in spec.files:
                _fetch_file(file, sources, staging / file.name, http, spec)
    finally:
        http.clear()
    log.info("%s: %d file(s) verified in %s", spec.name, len(spec.files), out_dir)
    return out_dir


def _pool(settings: DownloadSettings) -> urllib3.PoolManager:
    retry = Retry(
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
) -> None:
    failures: list[str] = []
    for source in sources:
        location = _location(source, file.name)
        try:
            if _is_url(source):
                _http_get(http, location, target)
            else:
                _copy_local(Path(location), target)
            digest = payload_sha256(target)
            if digest != file.sha256:
                raise SourceFailure(f"payload SHA-256 {digest[:12]}… != pinned {file.sha256[:12]}…")
        except SourceFailure as exc:
            target.unlink(missing_ok=True)
            failures.append(f"{location}: {exc}")
            log.warning("%s: %s", location, exc)
            continue
        log.info("%s: verified from %s", file.name, location)
        return
    raise DataError(
        f"Could not get {file.name} of dataset {spec.name!r} from any source:\n"
        + "\n".join(f"  - {failure}" for failure in failures)
        + f"\nTo fix: {spec.how_to_get or 'make one of the sources above reachable'}; "
        "or put the files in a directory and list it in params.yaml `data.mirrors`."
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


def _http_get(http: urllib3.PoolManager, url: str, target: Path) -> None:
    try:
        response = http.request("GET", url, preload_content=False)
    except MaxRetryError as exc:
        raise SourceFailure(f"gave up after retries: {_reason(exc.reason)}") from None
    except HTTPError as exc:
        raise SourceFailure(_reason(exc)) from None
    try:
        if response.status != 200:
            raise SourceFailure(f"HTTP {response.status} {response.reason or ''}".strip())
        with open(target, "wb") as out:
            for chunk in response.stream(CHUNK):
                out.write(chunk)
    except HTTPError as exc:
        raise SourceFailure(f"transfer failed: {_reason(exc)}") from None
    finally:
        response.release_conn()


def _reason(exc: BaseException | None) -> str:
    text = str(exc) if exc is not None else "unknown error"
    if "timed out" in text.lower():
        return f"timed out ({text})"
    return text


def copy_label_table(spec: DatasetSpec, out_dir: Path, settings: DownloadSettings) -> Path:
    """A user's multi-label set: the first mirror directory holding `labels.csv` (directly or
    under `<dataset>/`), checked row by row, copied with its images into `out_dir`.

    The copy's `labels.csv` lists `images/<row>.<ext>`, so the dataset no longer depends on
    where the original lived. Nothing is written unless every row is valid.
    """
    import csv
    import io

    from pipeline.core.io import atomic_write_bytes
    from pipeline.tasks.multilabel import read_label_table

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
        with atomic_dir(out_dir) as staging:
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
