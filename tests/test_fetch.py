"""`fetch` against a local HTTP server on 127.0.0.1 serving archives the test builds; the
real network is never touched."""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading
import zipfile
from pathlib import Path

import pytest
import torch

from bench.datasets import fetch as fetch_module
from bench.datasets.fetch import DOWNLOADS, fetch
from bench.datasets.registry import get_adapter
from bench.errors import BenchError, ConfigError, DataError

torch.set_num_threads(1)

U_DATA = "196\t242\t3\t881250949\n186\t302\t3\t891717742\n22\t377\t1\t878887116\n"


class _Quiet(http.server.SimpleHTTPRequestHandler):
    requests: list[str]

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        self.requests.append(self.path)
        super().do_GET()


@pytest.fixture
def server(tmp_path):
    """Serve tmp_path/www on 127.0.0.1; yields (base_url, folder, request log)."""
    www = tmp_path / "www"
    www.mkdir()
    log: list[str] = []
    handler = type("Handler", (_Quiet,), {"requests": log})
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(www))
    )
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", www, log
    httpd.shutdown()
    httpd.server_close()


def make_zip(path: Path, members: dict[str, str]) -> str:
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in members.items():
            zf.writestr(name, text)
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(autouse=True)
def no_real_network(monkeypatch):
    """Any URL that is not the local test server fails the test."""
    real = fetch_module.urllib.request.urlopen

    def local_only(url, *args, **kwargs):
        assert str(url).startswith("http://127.0.0.1:"), f"tried the network: {url}"
        return real(url, *args, **kwargs)

    monkeypatch.setattr(fetch_module.urllib.request, "urlopen", local_only)


def test_fetch_downloads_checks_and_unpacks(server, tmp_path):
    base, www, log = server
    digest = make_zip(www / "ml-100k.zip", {"ml-100k/u.data": U_DATA, "ml-100k/README": "x"})
    data = tmp_path / "data"
    got = fetch("ml-100k", data, url=f"{base}/ml-100k.zip", sha256=digest, progress=True)
    assert got == data / "ml-100k"
    assert (got / "u.data").read_text() == U_DATA
    assert sorted(p.name for p in data.iterdir()) == ["ml-100k"]  # no temp folder left
    frame = get_adapter("ml-100k", data).load()
    assert frame["user_id"].to_list() == [196, 186, 22]
    # Already there: nothing is downloaded again.
    assert fetch("ml-100k", data, url=f"{base}/ml-100k.zip", sha256=digest) == got
    assert log == ["/ml-100k.zip"]


def test_checksum_mismatch_leaves_nothing_behind(server, tmp_path):
    base, www, _ = server
    make_zip(www / "ml-1m.zip", {"ml-1m/ratings.dat": "1::2::3::4\n"})
    data = tmp_path / "data"
    with pytest.raises(DataError) as info:
        fetch("ml-1m", data, url=f"{base}/ml-1m.zip", sha256="0" * 64, progress=False)
    assert "SHA-256 mismatch" in info.value.message and info.value.hint
    assert list(data.iterdir()) == []


def test_force_replaces_the_folder_in_one_step(server, tmp_path):
    base, www, _ = server
    digest = make_zip(
        www / "ml.zip", {"ratings.csv": "userId,movieId,rating,timestamp\n1,2,3.0,4\n"}
    )
    target = tmp_path / "data" / "ml-latest-small"
    target.mkdir(parents=True)
    (target / "ratings.csv").write_text("old")
    (target / "stale.txt").write_text("old")
    fetch("ml-latest-small", tmp_path / "data", url=f"{base}/ml.zip", sha256=digest, force=True)
    assert sorted(p.name for p in target.iterdir()) == ["ratings.csv"]  # a flat zip works too
    assert sorted(p.name for p in target.parent.iterdir()) == ["ml-latest-small"]
    # Without force the existing folder is kept as it is.
    (target / "ratings.csv").write_text("mine")
    fetch("ml-latest-small", tmp_path / "data", url=f"{base}/ml.zip", sha256=digest)
    assert (target / "ratings.csv").read_text() == "mine"


@pytest.mark.parametrize(
    ("serve", "error", "words"),
    [
        ({"ml-100k.zip": b"<html>not found</html>"}, DataError, "not a zip"),
        ({}, BenchError, "could not download"),
        ("slip", DataError, "unsafe path"),
        ("wrong files", DataError, "none of"),
    ],
)
def test_bad_downloads_are_errors_and_leave_nothing(server, tmp_path, serve, error, words):
    base, www, _ = server
    if serve == "slip":
        make_zip(www / "ml-100k.zip", {"../../evil.txt": "x", "u.data": U_DATA})
    elif serve == "wrong files":
        make_zip(www / "ml-100k.zip", {"ml-100k/notes.txt": "x"})
    else:
        for name, body in serve.items():
            (www / name).write_bytes(body)
    data = tmp_path / "data"
    with pytest.raises(error) as info:
        fetch("ml-100k", data, url=f"{base}/ml-100k.zip", progress=False)
    assert words in info.value.message and info.value.hint
    assert list(data.iterdir()) == []
    assert not (tmp_path / "evil.txt").exists()


def test_published_md5_is_checked(server, tmp_path, monkeypatch):
    """Without a url override, the table's digest (or the publisher's .md5 file) decides."""
    base, www, _ = server
    make_zip(www / "ml-latest-small.zip", {"ml-latest-small/ratings.csv": "userId,movieId\n"})
    md5 = hashlib.md5((www / "ml-latest-small.zip").read_bytes()).hexdigest()
    (www / "ml-latest-small.zip.md5").write_text(f"MD5 (ml-latest-small.zip) = {md5}\n")
    entry = fetch_module.Download(
        f"{base}/ml-latest-small.zip", md5_url=f"{base}/ml-latest-small.zip.md5"
    )
    monkeypatch.setitem(DOWNLOADS, "ml-latest-small", entry)
    got = fetch("ml-latest-small", tmp_path / "a", progress=False)
    assert (got / "ratings.csv").exists()

    monkeypatch.setitem(
        DOWNLOADS, "ml-latest-small", fetch_module.Download(entry.url, md5="f" * 32)
    )
    with pytest.raises(DataError) as info:
        fetch("ml-latest-small", tmp_path / "b", progress=False)
    assert "MD5 mismatch" in info.value.message
    assert list((tmp_path / "b").iterdir()) == []


def test_data_sets_without_a_direct_link_name_their_page(tmp_path):
    with pytest.raises(BenchError) as info:
        fetch("taobao", tmp_path)
    text = info.value.render()
    assert "https://tianchi.aliyun.com/dataset/649" in text and "UserBehavior.csv" in text
    assert str(tmp_path / "taobao") in text
    with pytest.raises(ConfigError):
        fetch("no-such-set", tmp_path)


def test_the_table_links_grouplens_zips():
    assert set(DOWNLOADS) == {"ml-100k", "ml-1m", "ml-latest-small"}
    for name, entry in DOWNLOADS.items():
        assert entry.url == f"https://files.grouplens.org/datasets/movielens/{name}.zip"
        assert entry.md5 or entry.md5_url
