"""Remote archives (issue 17 item 6): nnar.open("http://...") and `nnar ls URL` read the trailer,
the index and one tensor with HTTP range requests, through fsspec, from a real HTTP server that
the test runs; a server that fails mid-read is an nnar error, not a traceback."""

import http.server
import json
import os
import re
import threading

import numpy as np
import pytest

import nnar
from nnar import cli

pytest.importorskip("fsspec")  # installed by tools/test.sh (the test extra); aiohttp with it
import aiohttp  # noqa: E402,F401  (a missing one must fail here, not skip)

TENSORS = {f"layer{i}.weight": np.random.default_rng(i).standard_normal((256, 256)).astype(np.float32)
           for i in range(24)}  # 24 x 256 KiB


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root):
        self.root, self.served, self.requests, self.fail_after = root, 0, [], None
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(http.server.BaseHTTPRequestHandler):
    """GET and HEAD with single byte ranges, as object stores serve them."""

    def log_message(self, *args):
        pass

    def _file(self):
        path = os.path.join(self.server.root, self.path.lstrip("/"))
        return path if os.path.isfile(path) else None

    def do_HEAD(self):
        path = self._file()
        if path is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(os.path.getsize(path)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()

    def do_GET(self):
        path = self._file()
        if path is None:
            self.send_error(404)
            return
        size = os.path.getsize(path)
        m = re.match(r"bytes=(\d*)-(\d*)$", self.headers.get("Range", ""))
        start, end = 0, size - 1
        if m:
            if m.group(1):
                start = int(m.group(1))
                end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
            else:
                start = max(size - int(m.group(2)), 0)
        if self.server.fail_after is not None and self.server.served >= self.server.fail_after:
            self.send_error(503)
            return
        with open(path, "rb") as f:
            f.seek(start)
            data = f.read(end - start + 1)
        self.server.served += len(data)
        self.server.requests.append((start, end))
        self.send_response(206 if m else 200)
        if m:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def served(tmp_path):
    nnar.pack(TENSORS, tmp_path / "m.nnar")
    server = _Server(str(tmp_path))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, f"http://127.0.0.1:{server.server_address[1]}/m.nnar", tmp_path / "m.nnar"
    finally:
        server.shutdown()
        server.server_close()


def test_one_tensor_costs_its_record_not_the_archive(served):
    server, url, local = served
    size = local.stat().st_size
    with nnar.open(url) as a:
        assert a.names() == list(TENSORS)
        server.served = 0
        np.testing.assert_array_equal(a.read("layer17.weight", verify=True), TENSORS["layer17.weight"])
        one = server.served
        assert a.content_digest() == nnar.open(local).content_digest()
    record = next(i.stored_bytes for i in nnar.open(local).infos() if i.name == "layer17.weight")
    print(f"one tensor: {one} bytes fetched for a {record}-byte record of a {size}-byte archive")
    assert record <= one < record + (600 << 10), (one, record)  # the record and some read-ahead
    assert one < size / 4


def test_cli_lists_verifies_and_takes_one_tensor_from_a_url(served, tmp_path, capsys, monkeypatch):
    server, url, local = served
    monkeypatch.chdir(tmp_path)
    server.served = 0
    assert cli.main(["ls", url, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [t["name"] for t in listed["tensors"]] == list(TENSORS)
    assert listed["totals"]["archive_bytes"] == local.stat().st_size
    assert server.served < local.stat().st_size / 3  # descriptors and the index, not the data
    assert cli.main(["unpack", url, "--tensor", "layer3.weight", "-q"]) == 0  # -> m.layer3.weight.npy here
    np.testing.assert_array_equal(np.load(tmp_path / "m.layer3.weight.npy"), TENSORS["layer3.weight"])
    assert cli.main(["verify", url, "-q"]) == 0
    np.savez(tmp_path / "w.npz", **TENSORS)
    assert cli.main(["pack", "w.npz", "-o", url.replace(".nnar", "2.nnar"), "-q"]) == 1
    assert "writes local files" in capsys.readouterr().err


def test_a_server_that_fails_is_one_nnar_error(served, capsys):
    server, url, _ = served
    assert cli.main(["ls", url.replace("m.nnar", "missing.nnar")]) == 1
    assert capsys.readouterr().err.startswith("nnar: error[io]")
    with nnar.open(url) as a:
        server.fail_after = server.served  # every request from now on: 503
        with pytest.raises(nnar.NnarIOError, match="reading"):
            a.read("layer20.weight")
