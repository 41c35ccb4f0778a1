"""Decoding on several threads (nnar.threads): CRCs summed in parts, byte planes and codebook
gathers in parts, the next records decoded while one is handed out. Each gives the bytes and the
errors of a serial decode, in the same order."""

import io
import threading
import zlib

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import nnar
from nnar import threads
from nnar.codecs import packing
from nnar.container import framing, records


@pytest.fixture
def two_threads(monkeypatch):
    nnar.set_threads(2)
    monkeypatch.setattr(threads, "AHEAD_MIN_BYTES", 0)  # every item worth a thread
    yield
    nnar.set_threads(None)


@given(st.binary(max_size=300), st.binary(max_size=300), st.integers(0, 2**32 - 1))
def test_crc32_combine_is_the_crc_of_the_concatenation(a, b, seed):
    assert framing.crc32_combine(zlib.crc32(a), zlib.crc32(b), len(b)) == zlib.crc32(a + b)
    start = seed  # and from any running value
    assert framing.crc32_combine(zlib.crc32(a, start), zlib.crc32(b), len(b)) == zlib.crc32(a + b, start)


def test_crc32_combine_of_long_parts():
    a, b = b"x" * 1000, bytes(range(256)) * 4097  # lengths with many bits set
    assert framing.crc32_combine(zlib.crc32(a), zlib.crc32(b), len(b)) == zlib.crc32(a + b)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_a_large_body_crc_in_parts_is_zlibs(monkeypatch, n):
    monkeypatch.setattr(records, "PARALLEL_CRC_BYTES", 1000)
    nnar.set_threads(n)
    try:
        data = np.random.default_rng(n).integers(0, 256, 100_003, np.uint8).tobytes()
        assert records.body_crc(data) == zlib.crc32(data)
        assert records.body_crc(b"") == 0
    finally:
        nnar.set_threads(None)


def _archive(model, **kw) -> bytes:
    return nnar.pack(model, **kw)


def test_large_tensors_decode_in_parts_to_the_serial_bytes(monkeypatch):
    """Byte planes, codebook gathers and body CRCs cut into parts (small thresholds, so small
    tensors exercise them) decode to what one thread decodes."""
    from nnar.codecs import byteplanes
    rng = np.random.default_rng(0)
    model = {"w": rng.standard_normal((257, 129)).astype(np.float32),
             "v": rng.standard_normal(5000).astype(np.float32)}
    lossless = _archive(model)
    k4 = _archive(model, config={"quant": "kmeans", "bits": 4, "min_params": 1})
    k8 = _archive(model, config={"quant": "kmeans", "bits": 8, "min_params": 1})
    serial = {}
    nnar.set_threads(1)
    for name, data in [("lossless", lossless), ("k4", k4), ("k8", k8)]:
        serial[name] = {k: v.tobytes() for k, v in nnar.unpack(data).items()}
    assert serial["lossless"] == {k: v.tobytes() for k, v in model.items()}
    monkeypatch.setattr(byteplanes, "_PARALLEL_MIN_ELEMENTS", 7)
    monkeypatch.setattr(byteplanes, "_CHUNK", 100)
    monkeypatch.setattr(packing, "_PARALLEL_MIN_BYTES", 5)
    monkeypatch.setattr(packing, "_GATHER_CHUNK", 64)
    monkeypatch.setattr(records, "PARALLEL_CRC_BYTES", 64)
    for n in (2, 3):
        nnar.set_threads(n)
        for name, data in [("lossless", lossless), ("k4", k4), ("k8", k8)]:
            assert {k: v.tobytes() for k, v in nnar.unpack(data).items()} == serial[name], (name, n)
            assert {k: v.tobytes() for k, v in nnar.open(data).items()} == serial[name], (name, n)
    nnar.set_threads(None)


def test_a_damaged_large_body_is_still_found(monkeypatch, two_threads):
    monkeypatch.setattr(records, "PARALLEL_CRC_BYTES", 64)
    data = bytearray(_archive({"w": np.random.default_rng(2).standard_normal(10_000).astype(np.float32)}))
    entry = nnar.open(bytes(data))._reader.tensor_entries()[0]
    data[entry.offset + 20_000] ^= 0x40  # in the record body: found by the CRC of one of its parts
    with pytest.raises(nnar.ChecksumMismatch):
        nnar.unpack(bytes(data))


# -- threads.ahead ----------------------------------------------------------------------------


def _collect(gen):
    return [(item, result()) for item, result in gen]


def test_ahead_gives_every_result_in_order(two_threads):
    items = list(range(50))
    got = _collect(threads.ahead(iter(items), lambda x: x * x, lambda x: 10))
    assert got == [(x, x * x) for x in items]


def test_ahead_works_on_the_pool_and_keeps_within_its_budget(two_threads):
    in_flight, most, lock = [0], [0], threading.Lock()

    def weight(x):
        return 100

    def work(x):
        with lock:
            in_flight[0] += 1
            most[0] = max(most[0], in_flight[0])
        names = threading.current_thread().name
        with lock:
            in_flight[0] -= 1
        return names

    out = _collect(threads.ahead(iter(range(40)), work, weight, budget=250))
    assert any(name.startswith("nnar-decode") for _, name in out)  # some ran on the pool
    assert most[0] <= 2  # 250 bytes of budget: at most two items of 100 ahead


def test_ahead_decodes_tiny_items_in_the_callers_thread(two_threads, monkeypatch):
    monkeypatch.setattr(threads, "AHEAD_MIN_BYTES", 1000)
    out = _collect(threads.ahead(iter(range(20)), lambda x: threading.current_thread().name, lambda x: 999))
    assert {name for _, name in out} == {threading.current_thread().name}


def test_ahead_does_large_items_alone_in_the_callers_thread_when_asked(two_threads):
    started = []

    def work(x):
        started.append(x)
        return threading.current_thread().name

    big = threads.PARALLEL_MIN_BYTES
    gen = threads.ahead(iter([("small", 1), ("big", big), ("small2", 1)]), lambda it: work(it[0]),
                        lambda it: it[1])
    (item, result) = next(gen)
    assert item[0] == "small"
    result()
    (item, result) = next(gen)
    assert item[0] == "big" and "big" not in started  # not begun before the caller asks
    assert result() == threading.current_thread().name
    assert [i[0] for i, _ in gen] == ["small2"]


def test_ahead_raises_errors_where_their_item_is(two_threads):
    def items():
        yield 1
        yield 2
        raise ValueError("reading item 3 failed")

    def work(x):
        if x == 2:
            raise KeyError("work on 2 failed")
        return x

    gen = threads.ahead(items(), work, lambda x: 1)
    item, result = next(gen)
    assert result() == 1
    item, result = next(gen)
    with pytest.raises(KeyError):  # the work's error at its own item, not the reader's after it
        result()
    with pytest.raises(ValueError, match="item 3"):
        next(gen)


def test_a_damaged_record_after_good_ones_is_reported_after_them(two_threads):
    """Reading ahead does not move an error earlier: the records before a damaged one are
    handed out first, in order and in a stream too."""
    rng = np.random.default_rng(1)
    model = {f"t{i}": rng.standard_normal(70_000).astype(np.float32) for i in range(6)}
    data = bytearray(_archive(model, config={"quant": "fp16"}))
    offsets = [e.offset for e in nnar.open(bytes(data))._reader.tensor_entries()]
    assert len(offsets) == 6  # one record each
    data[offsets[4] + 2000] ^= 1  # inside the fifth record's body
    seen = []
    with pytest.raises(nnar.NnarError):
        for name, _ in nnar.open(bytes(data)).items():
            seen.append(name)
    assert seen == ["t0", "t1", "t2", "t3"]
    seen = []
    with pytest.raises(nnar.NnarError):
        for info, _ in nnar.StreamReader(io.BytesIO(bytes(data))):
            seen.append(info.name)
    assert seen == ["t0", "t1", "t2", "t3"]
