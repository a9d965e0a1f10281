"""Download stage against a real HTTP server on 127.0.0.1 and local mirror directories."""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import replace

import pytest

from pipeline.stages.download import DownloadSettings, download
from pipeline.core.errors import DataError

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
