"""Shared fixtures: a real local HTTP server with scripted behaviour, and tiny IDX datasets.

Nothing here reaches the network: the server listens on 127.0.0.1, port 0 (the OS picks one).
"""

from __future__ import annotations

import gzip
import hashlib
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from pipeline.data.catalog import IDX_FILES, DatasetSpec, FileSpec, read_idx_dataset

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def project_root() -> Path:
    return PROJECT_ROOT


# --- the HTTP server ----------------------------------------------------------------------------


@dataclass
class Route:
    """What the server does for one path: fail `failures` times with `status`, then serve."""

    body: bytes = b""
    status: int = 200
    failures: int = 0
    failure_status: int = 500
    hang: bool = False
    cut_short: bool = False


class ScriptedServer:
    """A `ThreadingHTTPServer` whose answer per path is set by the test; counts requests."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.counts: Counter[str] = Counter()
        self.closing = threading.Event()
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/"

    def serve(self, path: str, body: bytes, *, failures: int = 0, failure_status: int = 500):
        self.routes[_norm(path)] = Route(
            body=body, failures=failures, failure_status=failure_status
        )

    def cut_short(self, path: str, body: bytes) -> None:
        """Announce `body` whole, send half of it, close: a connection lost mid-transfer."""
        self.routes[_norm(path)] = Route(body=body, cut_short=True)

    def not_found(self, path: str) -> None:
        self.routes[_norm(path)] = Route(status=404)

    def hang(self, path: str) -> None:
        """Accept the request and never answer (until the server shuts down)."""
        self.routes[_norm(path)] = Route(hang=True)

    def requests(self, path: str) -> int:
        with self._lock:
            return self.counts[_norm(path)]

    def _answer(self, path: str) -> Route:
        """Record one request to `path`; return what to do for this one."""
        with self._lock:
            self.counts[path] += 1
            route = self.routes.get(path, Route(status=404, body=b"no route\n"))
            if route.failures > 0:
                route.failures -= 1
                return Route(status=route.failure_status, body=b"scripted failure\n")
            return route

    def close(self) -> None:
        if self.closing.is_set():
            return
        self.closing.set()  # releases handlers that hang
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=10)


def _norm(path: str) -> str:
    return "/" + path.lstrip("/")


def _make_handler(server: ScriptedServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            route = server._answer(self.path)
            if route.hang:
                server.closing.wait()
                self.close_connection = True
                return
            self.send_response(route.status)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(route.body)))
            self.end_headers()
            if route.cut_short:
                self.wfile.write(route.body[: len(route.body) // 2])
                self.close_connection = True
            else:
                self.wfile.write(route.body)

        def log_message(self, format: str, *args) -> None:  # noqa: A002
            pass  # keep test output clean; counts are in server.counts

    return Handler


@pytest.fixture
def http_server() -> Iterator[ScriptedServer]:
    server = ScriptedServer()
    try:
        yield server
    finally:
        server.close()


# --- tiny IDX datasets --------------------------------------------------------------------------


@dataclass(frozen=True)
class IdxFile:
    name: str
    gz: bytes  # what a source publishes
    sha256: str  # of the decompressed payload, as the catalog pins it
    array: np.ndarray


def make_idx(name: str, array: np.ndarray) -> IdxFile:
    """Encode a uint8 array as a gzip-compressed IDX file."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    payload = header + array.tobytes()
    return IdxFile(
        name, gzip.compress(payload, mtime=0), hashlib.sha256(payload).hexdigest(), array
    )


def make_idx_dataset(
    n_train: int = 60, n_test: int = 20, image_shape: Sequence[int] = (4, 4), seed: int = 0
) -> dict[str, IdxFile]:
    """The four MNIST-layout files with random pixels and labels 0..9 (every class present)."""
    rng = np.random.default_rng(seed)
    arrays = []
    for n in (n_train, n_test):
        arrays.append(rng.integers(0, 256, size=(n, *image_shape), dtype=np.uint8))
        arrays.append(rng.permutation(np.arange(n) % 10).astype(np.uint8))
    return {name: make_idx(name, array) for name, array in zip(IDX_FILES, arrays, strict=True)}


def write_files(directory: Path, files: dict[str, IdxFile]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for file in files.values():
        (directory / file.name).write_bytes(file.gz)
    return directory


def idx_spec(files: dict[str, IdxFile], sources: Sequence[str], name: str = "tiny") -> DatasetSpec:
    """A catalog entry for `files`, read like MNIST, fetched from `sources` in order."""
    return DatasetSpec(
        name=name,
        kind="images",
        files=tuple(FileSpec(file.name, file.sha256) for file in files.values()),
        sources=tuple(str(source) for source in sources),
        reader=read_idx_dataset,
        class_names=tuple(str(digit) for digit in range(10)),
        how_to_get="generate it in the test",
    )


class IdxKit:
    """The helpers above, handed to tests as the `idx` fixture."""

    make = staticmethod(make_idx)
    dataset = staticmethod(make_idx_dataset)
    write = staticmethod(write_files)
    spec = staticmethod(idx_spec)


@pytest.fixture
def idx() -> IdxKit:
    return IdxKit()


def prepare_dataset(spec, root: Path, *, download_settings=None, split_settings=None) -> dict:
    """Run the real download, preprocess and split stages for `spec` under `root`; return the
    prepared meta."""
    from pipeline.core import paths
    from pipeline.stages.download import DownloadSettings, download
    from pipeline.stages.preprocess import PreprocessSettings, preprocess
    from pipeline.stages.split import SplitSettings, split

    download(spec, paths.raw_dir(spec.name, root), download_settings or DownloadSettings())
    meta = preprocess(
        spec,
        raw_dir=paths.raw_dir(spec.name, root),
        out_dir=paths.prepared_dir(spec.name, root),
        settings=PreprocessSettings(),
        overview_dir=paths.overview_dir(spec.name, root),
    )
    split(
        prepared_dir=paths.prepared_dir(spec.name, root),
        out_dir=paths.split_dir(spec.name, root),
        settings=split_settings or SplitSettings(),
    )
    return meta


def prepare_digits(root: Path) -> None:
    """Run the real download, preprocess and split stages for `digits` under `root`."""
    from pipeline.data.catalog import DIGITS

    prepare_dataset(DIGITS, root)
