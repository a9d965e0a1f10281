"""Download stage against a real HTTP server on 127.0.0.1 and local mirror directories."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from pipeline.core.errors import DataError
from pipeline.core.processes import owner_tag
from pipeline.data.catalog import DIGITS, FASHION_MNIST
from pipeline.stages.download import CHUNK, DownloadSettings, Limits, download

FAST = DownloadSettings(timeout_s=5, retries=3, backoff_factor=0.01, backoff_max_s=0.05)
IMAGES = "train-images-idx3-ubyte.gz"


def payload_digests(directory):
    return {
        path.name: hashlib.sha256(gzip.decompress(path.read_bytes())).hexdigest()
        for path in directory.iterdir()
    }


def leftovers(parent):
    """Anything in `parent` that a failed download might have left behind."""
    return sorted(path.name for path in parent.iterdir()) if parent.exists() else []


def test_downloads_every_file_from_a_url(http_server, idx, tmp_path):
    files = idx.dataset()
    for file in files.values():
        http_server.serve(file.name, file.gz)
    out = tmp_path / "raw" / "tiny"

    assert download(idx.spec(files, [http_server.url]), out, FAST) == out

    assert payload_digests(out) == {file.name: file.sha256 for file in files.values()}
    assert all(http_server.requests(name) == 1 for name in files)
    assert leftovers(out.parent) == ["tiny"]  # no staging directory remains


def test_local_mirror_is_preferred(http_server, idx, tmp_path):
    files = idx.dataset()
    mirror = idx.write(tmp_path / "mirror", files)
    for file in files.values():
        http_server.serve(file.name, file.gz)
    out = tmp_path / "raw" / "tiny"

    download(idx.spec(files, [http_server.url]), out, replace(FAST, mirrors=(str(mirror),)))

    assert payload_digests(out) == {file.name: file.sha256 for file in files.values()}
    assert sum(http_server.counts.values()) == 0  # the server was never asked


def test_server_errors_are_retried(http_server, idx, tmp_path):
    files = idx.dataset()
    for file in files.values():
        http_server.serve(file.name, file.gz)
    http_server.serve(IMAGES, files[IMAGES].gz, failures=2, failure_status=500)
    out = tmp_path / "raw" / "tiny"

    download(idx.spec(files, [http_server.url]), out, FAST)

    assert http_server.requests(IMAGES) == 3
    assert (out / IMAGES).read_bytes() == files[IMAGES].gz


def test_retries_are_bounded(http_server, idx, tmp_path):
    files = idx.dataset()
    http_server.serve(IMAGES, files[IMAGES].gz, failures=10, failure_status=503)
    settings = DownloadSettings(retries=2, backoff_factor=0.01, backoff_max_s=0.05)

    with pytest.raises(DataError) as caught:
        download(idx.spec(files, [http_server.url]), tmp_path / "raw" / "tiny", settings)

    assert http_server.requests(IMAGES) == 3  # one try and two retries
    assert f"{http_server.url}{IMAGES}: gave up after retries" in str(caught.value)
    assert "503" in str(caught.value)


def test_wrong_payload_is_rejected_and_the_next_source_used(http_server, idx, tmp_path):
    files = idx.dataset()
    impostor = idx.dataset(seed=1)  # same names and shapes, other pixels
    for file in impostor.values():
        http_server.serve(f"bad/{file.name}", file.gz)
    for file in files.values():
        http_server.serve(f"good/{file.name}", file.gz)
    out = tmp_path / "raw" / "tiny"
    spec = idx.spec(files, [http_server.url + "bad", http_server.url + "good/"])

    download(spec, out, FAST)

    assert payload_digests(out) == {file.name: file.sha256 for file in files.values()}
    assert http_server.requests(f"bad/{IMAGES}") == 1  # a bad hash is not retried
    assert http_server.requests(f"good/{IMAGES}") == 1
    assert leftovers(out.parent) == ["tiny"]


def test_every_source_failing_lists_each_and_leaves_nothing(http_server, idx, tmp_path):
    files = idx.dataset()
    mirror = idx.write(tmp_path / "mirror", idx.dataset(seed=1))  # wrong payloads
    http_server.not_found(IMAGES)
    missing = tmp_path / "nowhere"
    out = tmp_path / "raw" / "tiny"
    spec = idx.spec(files, [str(missing), http_server.url])

    with pytest.raises(DataError) as caught:
        download(spec, out, DownloadSettings(mirrors=(str(mirror),), backoff_factor=0.01))

    message = str(caught.value)
    assert message.startswith(f"Could not get {IMAGES} of dataset 'tiny' from any source:")
    assert f"  - {mirror / IMAGES}: payload SHA-256 " in message
    assert f"!= pinned {files[IMAGES].sha256[:12]}" in message
    assert f"  - {missing / IMAGES}: no such file" in message
    assert f"  - {http_server.url}{IMAGES}: HTTP 404" in message
    assert "To fix: generate it in the test" in message
    assert "data.mirrors" in message
    assert not out.exists()
    assert leftovers(out.parent) == []  # no .partial staging directories


def test_a_later_file_failing_discards_the_earlier_ones(http_server, idx, tmp_path):
    files = idx.dataset()
    for file in files.values():
        http_server.serve(file.name, file.gz)
    last = list(files)[-1]
    http_server.not_found(last)
    out = tmp_path / "raw" / "tiny"

    with pytest.raises(DataError, match=f"Could not get {last} "):
        download(idx.spec(files, [http_server.url]), out, FAST)

    assert http_server.requests(IMAGES) == 1  # the first file was fetched …
    assert not out.exists()  # … and is not left looking finished
    assert leftovers(out.parent) == []


def test_failed_download_keeps_the_previous_copy(http_server, idx, tmp_path):
    files = idx.dataset()
    out = idx.write(tmp_path / "raw" / "tiny", files)
    http_server.not_found(IMAGES)

    with pytest.raises(DataError):
        download(idx.spec(files, [http_server.url]), out, FAST)

    assert payload_digests(out) == {file.name: file.sha256 for file in files.values()}
    assert leftovers(out.parent) == ["tiny"]


def test_connection_lost_mid_transfer_falls_back_to_the_next_source(http_server, idx, tmp_path):
    files = idx.dataset()
    mirror = idx.write(tmp_path / "mirror", files)
    http_server.cut_short(IMAGES, files[IMAGES].gz)
    for file in list(files.values())[1:]:
        http_server.serve(file.name, file.gz)
    out = tmp_path / "raw" / "tiny"

    download(idx.spec(files, [http_server.url, str(mirror)]), out, FAST)

    assert payload_digests(out) == {file.name: file.sha256 for file in files.values()}
    assert http_server.requests(IMAGES) == 1
    assert (out / IMAGES).read_bytes() == files[IMAGES].gz  # the mirror's copy, whole


def test_connection_lost_mid_transfer_is_reported(http_server, idx, tmp_path):
    files = idx.dataset()
    http_server.cut_short(IMAGES, files[IMAGES].gz)

    with pytest.raises(DataError) as caught:
        download(idx.spec(files, [http_server.url]), tmp_path / "raw" / "tiny", FAST)

    assert f"{http_server.url}{IMAGES}: transfer failed: " in str(caught.value)
    assert "IncompleteRead" in str(caught.value)


def test_truncated_gzip_in_a_mirror_is_reported(idx, tmp_path):
    files = idx.dataset()
    mirror = idx.write(tmp_path / "mirror", files)
    whole = files[IMAGES].gz
    (mirror / IMAGES).write_bytes(whole[: len(whole) // 2])
    out = tmp_path / "raw" / "tiny"

    with pytest.raises(DataError) as caught:
        download(idx.spec(files, [str(mirror)]), out, FAST)

    assert f"{mirror / IMAGES}: truncated or corrupt gzip" in str(caught.value)
    assert not out.exists()


@pytest.mark.timeout(30)  # if the client timeout were ignored, fail here instead of hanging
def test_server_that_never_answers_times_out(http_server, idx, tmp_path):
    files = idx.dataset()
    http_server.hang(IMAGES)
    settings = DownloadSettings(timeout_s=0.5, retries=1, backoff_factor=0.01)

    with pytest.raises(DataError) as caught:
        download(idx.spec(files, [http_server.url]), tmp_path / "raw" / "tiny", settings)

    assert f"{http_server.url}{IMAGES}: gave up after retries: timed out" in str(caught.value)
    assert http_server.requests(IMAGES) == 2  # a read timeout is retried, `retries` times


def test_not_found_is_not_retried(http_server, idx, tmp_path):
    files = idx.dataset()
    http_server.not_found(IMAGES)

    with pytest.raises(DataError) as caught:
        download(idx.spec(files, [http_server.url]), tmp_path / "raw" / "tiny", FAST)

    assert f"{http_server.url}{IMAGES}: HTTP 404 Not Found" in str(caught.value)
    assert http_server.requests(IMAGES) == 1


def test_refused_connection_is_reported(idx, tmp_path, http_server):
    files = idx.dataset()
    url = http_server.url
    http_server.close()  # nothing listens on that port any more
    settings = DownloadSettings(timeout_s=2, retries=1, backoff_factor=0.01)

    with pytest.raises(DataError) as caught:
        download(idx.spec(files, [url]), tmp_path / "raw" / "tiny", settings)

    assert f"{url}{IMAGES}: gave up after retries:" in str(caught.value)
    assert "refused" in str(caught.value).lower()


# --- bounded downloads: a server whose bodies take long or never end ----------------------------


class StreamServer:
    """A real HTTP server on 127.0.0.1 for bodies that drip, flood or are only announced.

    Per path it records the body bytes it got out (`sent`) and whether the client hung up before
    the body was done (`hung_up`), so tests can tell from this side what the download read.
    """

    def __init__(self) -> None:
        self.routes: dict[str, tuple] = {}
        self.sent: Counter[str] = Counter()
        self.hung_up: defaultdict[str, threading.Event] = defaultdict(threading.Event)
        self.finished: defaultdict[str, threading.Event] = defaultdict(threading.Event)
        self.closing = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _stream_handler(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/"

    def drip(self, path: str, body: bytes, interval: float) -> None:
        """Announce `body` whole, then send it one byte every `interval` seconds."""
        self.routes[path] = ("drip", body, interval)

    def flood(self, path: str, total: int) -> None:
        """Send `total` bytes with no Content-Length, as fast as the client takes them."""
        self.routes[path] = ("flood", total)

    def announce(self, path: str, length: int) -> None:
        """Send headers with Content-Length `length`; send no body while the client waits."""
        self.routes[path] = ("announce", length)

    def busy(self, path: str, body: bytes, retry_after: str) -> None:
        """Answer 503 with `Retry-After: <retry_after>` once, then serve `body`."""
        self.routes[path] = ("busy", body, retry_after)

    def close(self) -> None:
        self.closing.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=10)


def _stream_handler(server: StreamServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            path = self.path.lstrip("/")
            kind, *args = server.routes[path]
            self.close_connection = True
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
            if kind == "busy":
                server.routes[path] = ("drip", args[0], 0)  # served whole from the next request
                self.send_response(503)
                self.send_header("Retry-After", args[1])
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            if kind != "flood":
                self.send_header("Content-Length", str(len(args[0]) if kind == "drip" else args[0]))
            self.end_headers()
            try:
                getattr(self, kind)(path, *args)
            except (BrokenPipeError, ConnectionResetError):
                server.hung_up[path].set()

        def drip(self, path: str, body: bytes, interval: float) -> None:
            for offset in range(len(body)):
                self.wfile.write(body[offset : offset + 1])
                server.sent[path] += 1
                if server.closing.wait(interval):
                    return
            server.finished[path].set()

        def flood(self, path: str, total: int) -> None:
            block = bytes(64 * 1024)
            while server.sent[path] < total:
                self.wfile.write(block)
                server.sent[path] += len(block)
            server.finished[path].set()

        def announce(self, path: str, length: int) -> None:
            readable, _, _ = select.select([self.connection], [], [], 10)
            if readable and self.connection.recv(1, socket.MSG_PEEK) == b"":
                server.hung_up[path].set()  # closed by the client, not one body byte sent

        def log_message(self, format: str, *args) -> None:  # noqa: A002
            pass

    return Handler


@pytest.fixture
def stream_server():
    server = StreamServer()
    try:
        yield server
    finally:
        server.close()


def sized(spec, files):
    """`spec` with each file's payload size recorded, as the real catalog records it."""
    return replace(
        spec,
        files=tuple(
            replace(file, size=len(gzip.decompress(files[file.name].gz))) for file in spec.files
        ),
    )


def test_sized_files_download_even_when_gzip_outgrows_the_payload(http_server, idx, tmp_path):
    files = idx.dataset()  # random pixels: gzip makes them larger, not smaller
    for file in files.values():
        http_server.serve(file.name, file.gz)
    spec = sized(idx.spec(files, [http_server.url]), files)
    assert len(files[IMAGES].gz) > spec.files[0].size
    out = tmp_path / "raw" / "tiny"

    download(spec, out, FAST)

    assert payload_digests(out) == {file.name: file.sha256 for file in files.values()}


@pytest.mark.timeout(30)  # without a deadline the body would take minutes: fail, do not hang
def test_a_dripping_server_is_cut_off_at_the_deadline(stream_server, idx, tmp_path):
    files = idx.dataset()
    body = files[IMAGES].gz  # at 4 bytes a second this body would take minutes
    stream_server.drip(IMAGES, body, interval=0.25)
    spec = sized(idx.spec(files, [stream_server.url]), files)
    settings = replace(FAST, timeout_s=1.5)
    limits = Limits.for_file(spec.files[0], settings.timeout_s)
    out = tmp_path / "raw" / "tiny"

    with pytest.raises(DataError) as caught:
        download(spec, out, settings)

    message = str(caught.value)
    assert message.startswith(f"Could not get {IMAGES} of dataset 'tiny' from any source:")
    assert f"  - {stream_server.url}{IMAGES}: too slow: " in message
    assert f"when the deadline of {limits.deadline_s:.1f} s passed" in message
    assert "data.timeout_s 1.5 s" in message and "raise params.yaml `data.timeout_s`" in message
    assert "data.mirrors" in message
    received = int(re.search(r"too slow: (\d+) bytes received", message)[1])
    assert stream_server.hung_up[IMAGES].wait(timeout=10)  # the client closed the connection …
    assert not stream_server.finished[IMAGES].is_set()  # … long before the body was sent
    assert 0 < received <= stream_server.sent[IMAGES] < len(body)
    assert not out.exists()
    assert leftovers(out.parent) == []


@pytest.mark.timeout(30)
def test_a_body_larger_than_the_catalog_size_is_cut_off(stream_server, idx, tmp_path):
    files = idx.dataset()
    total = 256 << 20
    stream_server.flood(IMAGES, total)
    spec = sized(idx.spec(files, [stream_server.url]), files)
    cap = Limits.for_file(spec.files[0], FAST.timeout_s).cap
    out = tmp_path / "raw" / "tiny"

    with pytest.raises(DataError) as caught:
        download(spec, out, FAST)

    message = str(caught.value)
    assert f"  - {stream_server.url}{IMAGES}: refused after " in message
    assert f"the body exceeds the cap of {cap} bytes (the catalog's size " in message
    assert f"size {spec.files[0].size} bytes + 1 % + 64 KiB), so it is not the published" in message
    received = int(re.search(r"refused after (\d+) bytes", message)[1])
    assert cap < received <= cap + CHUNK
    assert stream_server.hung_up[IMAGES].wait(timeout=10)
    # The server got out what was read plus what the two sockets buffer (256 KiB here), far
    # from the whole body.
    assert stream_server.sent[IMAGES] <= cap + CHUNK + (8 << 20) < total
    assert not stream_server.finished[IMAGES].is_set()
    assert not out.exists()
    assert leftovers(out.parent) == []


@pytest.mark.timeout(30)
def test_an_announced_length_over_the_cap_is_refused_before_reading(stream_server, idx, tmp_path):
    files = idx.dataset()
    stream_server.announce(IMAGES, 10**9)
    spec = sized(idx.spec(files, [stream_server.url]), files)
    out = tmp_path / "raw" / "tiny"

    with pytest.raises(DataError) as caught:
        download(spec, out, replace(FAST, timeout_s=30))  # waiting for a body would hang 30 s

    assert (
        f"{stream_server.url}{IMAGES}: refused before reading: Content-Length 1000000000 bytes "
        "exceeds the cap of " in str(caught.value)
    )
    assert stream_server.hung_up[IMAGES].wait(timeout=5)  # hung up on the headers alone
    assert stream_server.sent[IMAGES] == 0
    assert leftovers(out.parent) == []


@pytest.mark.timeout(30)
def test_a_long_retry_after_is_waited_only_up_to_backoff_max(stream_server, idx, tmp_path):
    files = idx.dataset()
    for file in files.values():
        stream_server.drip(file.name, file.gz, interval=0)
    stream_server.busy(IMAGES, files[IMAGES].gz, retry_after="86400")  # come back tomorrow
    out = tmp_path / "raw" / "tiny"

    download(idx.spec(files, [stream_server.url]), out, replace(FAST, backoff_max_s=0.05))

    assert payload_digests(out) == {file.name: file.sha256 for file in files.values()}


def test_local_copies_are_not_capped_by_the_published_size(idx, tmp_path):
    files = idx.dataset()
    mirror = idx.write(tmp_path / "mirror", files)
    padded = gzip.compress(gzip.decompress(files[IMAGES].gz), mtime=0) + bytes(200_000)
    (mirror / IMAGES).write_bytes(padded)  # a recompressed copy, far larger than the payload
    out = tmp_path / "raw" / "tiny"

    download(sized(idx.spec(files, [str(mirror)]), files), out, FAST)

    assert (out / IMAGES).read_bytes() == padded


def test_debians_recompressed_fashion_mnist_passes_the_catalog_bounds(tmp_path):
    assert Path(FASHION_MNIST.sources[0]).is_dir(), "install dataset-fashion-mnist (.ci/run does)"
    out = tmp_path / "raw" / "fashion_mnist"

    download(FASHION_MNIST, out, DownloadSettings())

    assert sorted(path.name for path in out.iterdir()) == sorted(
        f.name for f in FASHION_MNIST.files
    )


# --- leftovers of a killed download -------------------------------------------------------------


def test_partial_dirs_of_dead_processes_are_removed_and_live_ones_kept(http_server, idx, tmp_path):
    files = idx.dataset()
    for file in files.values():
        http_server.serve(file.name, file.gz)
    out = tmp_path / "raw" / "tiny"
    finished = subprocess.Popen(["true"])
    finished.wait()  # its PID now names no process
    running = subprocess.Popen(["sleep", "60"])
    try:
        stale = out.parent / f".tiny.partial-{owner_tag(finished.pid)}-k1lled0x"
        kept = [
            f".tiny.partial-{owner_tag(running.pid)}-runn1ng0",  # a live concurrent download
            f".tiny.partial-{finished.pid}@elsewhere-0therh0s",  # another host: cannot tell
            ".tiny.partial-n00wner0",  # made without an owner
            f".other.partial-{owner_tag(finished.pid)}-0therset",  # another dataset's
        ]
        for name in [stale.name, *kept]:
            (out.parent / name).mkdir(parents=True)
            (out.parent / name / IMAGES).write_bytes(b"half")

        download(idx.spec(files, [http_server.url]), out, FAST)

        assert leftovers(out.parent) == sorted([*kept, "tiny"])
        assert payload_digests(out) == {file.name: file.sha256 for file in files.values()}
    finally:
        running.kill()
        running.wait()


@pytest.mark.timeout(60)
def test_a_killed_download_leaves_a_partial_dir_that_the_next_one_removes(
    http_server, stream_server, project_root, tmp_path
):
    source = Path(DIGITS.sources[0]) / "digits.csv.gz"
    assert source.is_file(), f"{source}: scikit-learn ships it; reinstall scikit-learn"
    body = source.read_bytes()
    stream_server.drip("digits.csv.gz", body, interval=0.1)
    http_server.serve("digits.csv.gz", body)
    raw = tmp_path / "data" / "raw"

    first = run_download_stage("digits", stream_server.url, tmp_path, project_root)
    try:
        wait_for(lambda: stream_server.sent["digits.csv.gz"] >= 3)  # mid-body
        partial = list(raw.glob(f".digits.partial-{owner_tag(first.pid)}-*"))
        os.kill(first.pid, signal.SIGKILL)
    finally:
        first.kill()
        first.wait()
    assert first.returncode == -signal.SIGKILL
    assert len(partial) == 1 and partial[0].is_dir()  # SIGKILL leaves the staging dir behind
    assert leftovers(raw) == [partial[0].name]

    second = run_download_stage("digits", http_server.url, tmp_path, project_root)
    assert second.wait(timeout=60) == 0, second.stderr.read()

    assert leftovers(raw) == ["digits"]  # the leftover is gone, the new copy in place
    assert (raw / "digits" / "digits.csv.gz").read_bytes() == body
    assert http_server.requests("digits.csv.gz") == 1


def run_download_stage(dataset, mirror, project, project_root):
    """`python -m pipeline download <dataset>` in `project`, with `mirror` first in line."""
    params = YAML(typ="safe", pure=True).load(project_root / "params.yaml")
    params["data"].update(mirrors=[mirror], timeout_s=30)
    if dataset not in params["data"]["datasets"]:
        params["data"]["datasets"].append(dataset)
    (project / "params.yaml").write_text(json.dumps(params))  # JSON is YAML 1.2
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", "download", dataset],
        cwd=project,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(condition, timeout=20.0):
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, "timed out waiting"
        time.sleep(0.02)
