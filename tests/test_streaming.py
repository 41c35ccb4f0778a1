"""Streaming equals one-shot for any chunking: reading an archive from a non-seekable source
whose reads return arbitrary short chunks (or from a real pipe) gives exactly what reading it
from bytes gives; and writing needs no seek either."""

from __future__ import annotations

import io
import os
import threading
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, strategies as st

import nnar

import helpers as H
import strategies as S
from archive_builder import RAW, Builder, frame_only
from helpers import ShortReads, ShortReadsNoReadinto, write_archive


def read_all(source, **kw):
    r = nnar.StreamReader(source, **kw)
    return r.metadata, [(info, arr) for info, arr in r]


@given(S.tensor_dicts(), S.metadata(), S.chunk_sizes(), st.booleans())
def test_stream_reader_over_short_reads_equals_reading_from_bytes(tensors, md, sizes, readinto):
    blob = write_archive(tensors, metadata=md)
    md_ref, ref = read_all(io.BytesIO(blob))
    source = (ShortReads if readinto else ShortReadsNoReadinto)(blob, sizes)
    md_got, got = read_all(source, verify=True)
    assert md_got == md_ref == md
    assert [i for i, _ in got] == [i for i, _ in ref]
    for (_, a), (_, b), t in zip(got, ref, tensors.values()):
        H.assert_same_tensor(a, t)
        H.assert_same_tensor(b, t)


@given(S.tensor_dicts(), S.chunk_sizes())
def test_unpack_and_verify_over_short_reads(tensors, sizes):
    blob = write_archive(tensors)
    out = nnar.unpack(ShortReads(blob, sizes))
    assert list(out) == list(tensors)
    for name, t in tensors.items():
        H.assert_same_tensor(out[name], t)
    assert nnar.verify(ShortReads(blob, sizes)) == nnar.verify(blob)


@given(S.tensor_dicts(max_size=3), S.chunk_sizes(), st.data())
def test_a_truncated_stream_is_truncated_for_any_chunking(tensors, sizes, data):
    blob = write_archive(tensors)
    cut = data.draw(st.integers(0, len(blob) - 1))
    with pytest.raises(nnar.Truncated):
        nnar.unpack(ShortReads(blob[:cut], sizes))


@given(S.tensor_dicts(max_size=3), S.chunk_sizes(), st.binary(min_size=1, max_size=100))
def test_bytes_after_the_trailer_are_refused_for_any_chunking(tensors, sizes, extra):
    blob = write_archive(tensors)
    with pytest.raises(nnar.BadLayout):
        nnar.unpack(ShortReads(blob + extra, sizes))


def test_one_byte_reads(small_model):
    blob = nnar.pack(small_model)
    src = ShortReads(blob, [1])
    out = nnar.unpack(src)
    assert src.calls >= len(blob)
    for name, arr in small_model.items():
        H.assert_same_tensor(out[name], arr)


def _feed(fd: int, data: bytes, chunk: int) -> None:
    try:
        for i in range(0, len(data), chunk):
            os.write(fd, data[i:i + chunk])
    finally:
        os.close(fd)


@pytest.mark.parametrize("buffering", [0, -1], ids=["raw-fd", "buffered"])
@pytest.mark.parametrize("chunk", [1, 1000, 1 << 16])
def test_reading_from_a_real_pipe(small_model, buffering, chunk):
    big = dict(small_model, big=np.random.default_rng(2).normal(size=200_000).astype(np.float32))
    blob = nnar.pack(big)
    r, w = os.pipe()
    feeder = threading.Thread(target=_feed, args=(w, blob, chunk))
    feeder.start()
    try:
        with os.fdopen(r, "rb", buffering=buffering) as f:
            assert not f.seekable()
            out = nnar.unpack(f, verify=True)
    finally:
        feeder.join()
    assert list(out) == list(big)
    for name, arr in big.items():
        H.assert_same_tensor(out[name], arr)


def test_writing_needs_no_seek(small_model):
    class Sink:
        def __init__(self):
            self.parts = []

        def write(self, b):
            self.parts.append(bytes(b))
            return len(b)

        def seekable(self):
            return False

    sink = Sink()
    with nnar.ArchiveWriter(sink) as w:
        for name, arr in small_model.items():
            w.write(name, arr)
    assert b"".join(sink.parts) == nnar.pack(small_model)


def test_a_stream_declaring_a_huge_body_fails_on_what_it_holds():
    """A few hundred bytes that declare an 8 GiB body: Truncated, and memory stays small
    (reads from a stream grow their buffer only as bytes arrive, spec §12)."""
    n = 8 << 30
    blob = Builder().build()
    index_at = blob.index(b"INDX")  # where the first record after META starts
    desc = {"tensors": [["x", [n]]], "dtype": "uint8", "digest": bytes(32), "pipeline": [RAW],
            "segments": [{"name": "data", "length": n, "raw_length": n, "codecs": []}]}
    body_offset = index_at + len(frame_only(b"TENS", desc, 0))
    pad = -body_offset % 64  # a lone verbatim segment starts 64-aligned (spec §5.2.3)
    head = frame_only(b"TENS", desc, pad + n)
    evil = blob[:index_at] + head + b"\0" * 300
    tracemalloc.start()
    try:
        with pytest.raises(nnar.NnarError) as e:
            nnar.unpack(ShortReads(evil, [1 << 20]))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert isinstance(e.value, nnar.Truncated), e.value
    assert peak < 64 << 20


def test_random_access_on_a_stream_is_refused_clearly(small_model):
    with pytest.raises(nnar.NnarIOError, match="seekable"):
        nnar.open(ShortReads(nnar.pack(small_model), [100]))
