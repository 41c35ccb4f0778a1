"""Parallel packing (issue 17 items 3 and 5): records encoded on threads, processes or a real
local Dask cluster are written in order, and the archive is byte for byte the one a single
thread writes, lossless and lossy alike; warnings raised in another process reach the caller."""

import io
import warnings
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import nnar
from nnar import cli

pytestmark = pytest.mark.filterwarnings("ignore::nnar.lossy.LossyWarning")

CONFIGS = [None, "int8", "fp16", {"quant": "kmeans", "bits": 4}, {"prune_global": 0.5},
           {"quant": "uniform", "bits": 4, "prune": 0.3}]


def _model(seed: int, n: int = 10) -> dict:
    rng = np.random.default_rng(seed)
    out = {}
    for i in range(n):  # large tensors (records of their own) and small ones (grouped)
        shape = (int(rng.integers(64, 200)), int(rng.integers(32, 160))) if i % 3 else (int(rng.integers(1, 90)),)
        out[f"layer{i}.w"] = (rng.standard_normal(shape) * 0.05).astype(np.float32)
    out["ids"] = np.arange(50, dtype=np.int64)
    out["nan"] = np.full((80, 80), np.nan, np.float32)  # lossy settings cannot take it: lossless, with a warning
    return out


def _pack(tensors, config, **kw) -> bytes:
    buf = io.BytesIO()
    nnar.pack(tensors, buf, config=config, **kw)
    return buf.getvalue()


@settings(max_examples=12, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from(CONFIGS), st.integers(2, 4))
def test_threads_write_the_archive_one_thread_writes(seed, config, threads):
    model = _model(seed)
    assert _pack(model, config, threads=threads) == _pack(model, config)


def test_processes_write_it_too_and_their_warnings_come_back():
    model = _model(7)
    with warnings.catch_warnings(record=True) as here:
        warnings.simplefilter("always")
        serial = _pack(model, "int8")
    with ProcessPoolExecutor(2) as ex, warnings.catch_warnings(record=True) as there:
        warnings.simplefilter("always")
        assert _pack(model, "int8", executor=ex) == serial
    said = lambda caught: sorted(str(w.message) for w in caught if "NaN" in str(w.message))  # noqa: E731
    assert said(there) == said(here) and said(here)


def test_a_real_dask_cluster_packs_the_same_archive(tmp_path):
    import distributed  # the test extra installs it: missing, this fails (a skip would hide a broken set-up)
    model = _model(3, 14)
    np.savez(tmp_path / "m.npz", **model)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=40) as cluster:
        address = cluster.scheduler_address
        assert _pack(model, {"quant": "kmeans", "bits": 4}, dask=address) == \
            _pack(model, {"quant": "kmeans", "bits": 4})
        assert cli.main(["pack", str(tmp_path / "m.npz"), "-o", str(tmp_path / "d.nnar"), "--dask", address, "-q"]) == 0
    assert cli.main(["pack", str(tmp_path / "m.npz"), "-o", str(tmp_path / "t.nnar"), "--threads", "1", "-q"]) == 0
    assert (tmp_path / "d.nnar").read_bytes() == (tmp_path / "t.nnar").read_bytes()


def test_one_way_to_run_the_encoders():
    with pytest.raises(nnar.InvalidInput, match="threads: expected an integer >= 1"):
        _pack(_model(1, 2), None, threads=0)
    with ThreadPoolExecutor(2) as ex, pytest.raises(nnar.InvalidInput, match="one way to run the encoders"):
        _pack(_model(1, 2), None, threads=2, executor=ex)


def test_infos_are_complete_when_the_writer_closes():
    from nnar.archive import ArchiveWriter
    buf = io.BytesIO()
    model = _model(5)
    with ThreadPoolExecutor(2) as ex:
        with ArchiveWriter(buf, executor=ex) as w:
            for name, a in model.items():
                w.write(name, a)
    assert [i.name for i in w.infos] == list(model)
    assert {n: a.tobytes() for n, a in nnar.unpack(buf.getvalue()).items()} == {n: a.tobytes() for n, a in model.items()}


def test_a_records_streams_decode_in_parallel_to_the_same_bytes_and_the_same_error(monkeypatch):
    """nnar.threads: the streams of one record are decoded one per thread; the bytes are those
    of a serial decode, and of two broken streams the first in record order is reported."""
    import zstandard
    from archive_builder import BYTEPLANES, Builder, zstd_stage
    from nnar import threads
    monkeypatch.setattr(threads, "PARALLEL_MIN_BYTES", 0)
    w = np.random.default_rng(0).standard_normal((300, 200)).astype(np.float32)
    data = _pack({"w": w}, None)
    got = {}
    for n in (1, 2, 4):
        nnar.set_threads(n)
        got[n] = nnar.unpack(data)["w"].tobytes()
    assert got[1] == got[2] == got[4] == w.tobytes()
    plane = np.frombuffer(w.tobytes(), np.uint8)[::4].tobytes()  # any bytes of the right length
    good = zstandard.ZstdCompressor().compress(plane)
    # CRC-valid (the builder computes them) but cut zstd frames, told apart by their lengths
    cut = {1: good[: len(good) // 2], 3: good[: len(good) // 3]}
    segs = [(f"p{k}", [zstd_stage()], len(plane), cut.get(k, good)) for k in range(4)]
    archive = Builder().tensor([("w", w.shape)], "float32", segs, pipeline=[BYTEPLANES], decoded=w.tobytes()).build()
    for n in (1, 2, 4, 4, 4):
        nnar.set_threads(n)
        with pytest.raises(nnar.CodecDataError, match=f"frame of {len(cut[1])} bytes"):  # p1's, never p3's
            nnar.unpack(archive)
    nnar.set_threads(None)
