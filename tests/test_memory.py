"""Memory bounds (spec/SECURITY.md "Memory and time"): reading an archive never allocates more
than the sizes it declares, and a declared size is checked against the limits (and, where the
file's size is known, against the bytes present) before anything is allocated for it.

Peaks are measured with tracemalloc, which sees Python objects, numpy arrays and
python-zstandard's output buffers. Bounds:

* a declaration beyond the limits: rejected having allocated nothing of its size (< 1 MiB);
* a declaration within the limits that lies (a tiny zstd frame declaring 64 MiB): at most the
  declared size, once, before the lie is found;
* a real bomb within the limits (64 MiB of zeros in 2 KB): the declared size, once;
* a stream (pipe) that declares more than it holds: at most one read chunk (16 MiB) beyond
  what it really holds.
"""

from __future__ import annotations

import io
import struct
import sys
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
import zstandard

import nnar
from nnar.container.io import CHUNK

from archive_builder import Builder, preamble, zstd_stage

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fuzz"))
from common import NonSeekable  # noqa: E402

MiB = 1 << 20
SLACK = 1 * MiB  # interpreter noise: descriptors, tracebacks, small arrays
N = 64 * MiB  # the declared size of the bombs


def peak(fn) -> tuple[object, int]:
    """(what ``fn()`` returned or the NnarError it raised, peak bytes allocated meanwhile)."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    try:
        try:
            out = fn()
        except nnar.NnarError as e:
            out = e
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def lying_frame(content_size: int, payload: bytes = b"\0") -> bytes:
    """One zstd frame (RFC 8878) declaring ``content_size`` bytes, holding one raw block of
    ``payload``: single segment, 8-byte Frame_Content_Size, no checksum."""
    block = (1 | len(payload) << 3).to_bytes(3, "little")  # last block, raw
    return b"\x28\xb5\x2f\xfd" + bytes([0xE0]) + struct.pack("<Q", content_size) + block + payload


def zstd_tensor(frame: bytes, n: int, decoded: bytes = b"") -> bytes:
    return Builder().tensor([("x", (n,))], "uint8", [("data", [zstd_stage()], n, frame)], decoded=decoded).build()


READERS = {
    "unpack": lambda blob, limits: nnar.unpack(blob, limits=limits),
    "stream": lambda blob, limits: [a for _, a in nnar.StreamReader(NonSeekable(blob), limits)],
    "verify": lambda blob, limits: nnar.verify(blob, limits),
    "open": lambda blob, limits: nnar.open(io.BufferedReader(io.BytesIO(blob)), limits).read("x"),
}


def test_the_measure_sees_numpy_and_zstd_buffers():
    """tracemalloc must see the allocations this file bounds, or every bound below is vacuous."""
    _, p = peak(lambda: np.empty(8 * MiB, np.uint8))
    assert p >= 8 * MiB
    frame = zstandard.ZstdCompressor(write_content_size=True).compress(bytes(8 * MiB))
    _, p = peak(lambda: zstandard.ZstdDecompressor().decompress(frame))
    assert p >= 8 * MiB


@pytest.mark.parametrize("how", READERS)
def test_a_lying_zstd_frame_costs_at_most_its_declared_size(how):
    blob = zstd_tensor(lying_frame(N), N)
    assert len(blob) < 500
    err, p = peak(lambda: READERS[how](blob, nnar.DEFAULT_LIMITS))
    assert isinstance(err, nnar.CodecDataError), err
    assert p <= N + SLACK, p


@pytest.mark.parametrize("how", READERS)
def test_a_lying_zstd_frame_beyond_the_limit_allocates_nothing(how):
    blob = zstd_tensor(lying_frame(N), N)
    err, p = peak(lambda: READERS[how](blob, nnar.Limits(max_tensor_bytes=N // 2)))
    assert isinstance(err, nnar.LimitExceeded), err
    assert p < SLACK, p


@pytest.mark.parametrize("how", READERS)
def test_a_frame_declaring_more_than_raw_length_is_refused_before_decompressing(how):
    blob = zstd_tensor(lying_frame(N), 1024)  # the segment says 1 KiB, the frame 64 MiB
    err, p = peak(lambda: READERS[how](blob, nnar.DEFAULT_LIMITS))
    assert isinstance(err, nnar.CodecDataError) and "declares" in str(err), err
    assert p < SLACK, p


@pytest.mark.parametrize("how", READERS)
def test_a_real_bomb_within_the_limits_costs_its_declared_size_once(how):
    frame = zstandard.ZstdCompressor(level=3, write_content_size=True).compress(bytes(N))
    blob = zstd_tensor(frame, N, decoded=bytes(N))
    assert len(blob) < 4096
    out, p = peak(lambda: READERS[how](blob, nnar.DEFAULT_LIMITS))
    assert not isinstance(out, Exception), out
    assert p <= N + SLACK, p


def test_a_huge_declared_shape_allocates_nothing():
    for shape in [(1 << 40,), (1 << 31, 1 << 31), (1 << 62,)]:
        blob = Builder().tensor([("x", shape)], "uint8", [("data", [], 4, b"\0" * 4)], decoded=b"").build()
        for how, read in READERS.items():
            err, p = peak(lambda: read(blob, nnar.DEFAULT_LIMITS))
            assert isinstance(err, nnar.LimitExceeded), (how, shape, err)
            assert p < SLACK, (how, shape, p)


# -- compressed descriptors ---------------------------------------------------------------------


def descriptor_bomb(declared: int) -> bytes:
    """An archive whose only TENS record's descriptor is a lying zstd frame."""
    b = Builder()
    b.add(b"TENS", raw_descriptor=lying_frame(declared, b"\x80"), flags=1 | 2)
    return b.build()


@pytest.mark.parametrize("how", READERS)
def test_a_lying_compressed_descriptor_costs_at_most_its_declared_size(how):
    declared = 60 * MiB  # within max_descriptor_bytes (64 MiB)
    err, p = peak(lambda: READERS[how](descriptor_bomb(declared), nnar.DEFAULT_LIMITS))
    assert isinstance(err, (nnar.BadDescriptor, nnar.BadLayout)), err
    assert p <= declared + SLACK, p


@pytest.mark.parametrize("how", READERS)
def test_a_compressed_descriptor_declaring_too_much_allocates_nothing(how):
    err, p = peak(lambda: READERS[how](descriptor_bomb(1 << 40), nnar.DEFAULT_LIMITS))
    assert isinstance(err, (nnar.LimitExceeded, nnar.BadLayout)), err
    assert p < SLACK, p


# -- declared lengths beyond the bytes present ---------------------------------------------------


def tiny(frame_fields: dict, descriptor: bytes = b"\x80") -> bytes:
    """Preamble + a META frame with ``frame_fields`` overridden (CRC right) + ``descriptor``:
    with the 3-byte descriptors below, 51 bytes in all."""
    pre = preamble()
    f = {"record_type": b"META", "flags": 1, "body_length": 0, "descriptor_length": len(descriptor), **frame_fields}
    head = struct.pack("<4sIQIII", f["record_type"], f["flags"], f["body_length"], f["descriptor_length"],
                       zlib.crc32(b""), 0)
    crc = zlib.crc32(descriptor, zlib.crc32(head, zlib.crc32(pre)))
    return pre + head + struct.pack("<I", crc) + descriptor


FIFTY_ONE = {
    # a body of 2^64 - 1 bytes
    "huge-body": (tiny({"body_length": (1 << 64) - 1}, b"\x80\x80\x80"), nnar.LimitExceeded),
    # a descriptor of 4 GiB - 1
    "huge-descriptor": (tiny({"descriptor_length": (1 << 32) - 1}, b"\x80\x80\x80"), nnar.LimitExceeded),
    # a descriptor of 64 MiB (the limit), of which 3 bytes are there
    "descriptor-past-the-end": (tiny({"descriptor_length": 64 * MiB}, b"\x80\x80\x80"), nnar.Truncated),
    # msgpack counts: an array of 65535 items, a map of 65535 pairs, in 3 bytes
    "array16-count": (tiny({}, b"\xdc\xff\xff"), nnar.BadDescriptor),
    "map16-count": (tiny({}, b"\xde\xff\xff"), nnar.BadDescriptor),
    # a body of 1 GiB (within the limits), of which nothing is there: the descriptor before it
    # is checked first (three empty maps are not one map)
    "body-past-the-end": (tiny({"body_length": 1 << 30}, b"\x80\x80\x80"), nnar.BadDescriptor),
}


@pytest.mark.parametrize("name", FIFTY_ONE)
def test_fifty_one_byte_files_are_rejected_with_their_error_allocating_nothing(name):
    blob, error = FIFTY_ONE[name]
    assert len(blob) == 51
    for how, read in READERS.items():
        err, p = peak(lambda: read(blob, nnar.DEFAULT_LIMITS))
        assert isinstance(err, error), (how, err)
        # from a pipe the reader cannot know the size: it reads in chunks of at most CHUNK
        assert p < (CHUNK + SLACK if how == "stream" else SLACK), (how, p)


def test_a_huge_msgpack_count_in_a_descriptor_is_bad_descriptor():
    for desc in (b"\xdd\xff\xff\xff\xff", b"\xdf\xff\xff\xff\xff", b"\xc6\xff\xff\xff\xff", b"\xdb\xff\xff\xff\xff"):
        blob = tiny({}, desc)
        err, p = peak(lambda: nnar.unpack(blob))
        assert isinstance(err, nnar.BadDescriptor), (desc, err)
        assert p < SLACK


def test_deep_msgpack_nesting_is_limit_exceeded():
    deep = b"\x81\xa1k" + b"\x91" * 100_000 + b"\xc0"  # {"k": [[[[...]]]]}
    blob = Builder().add(b"XTRA", raw_descriptor=deep).build()
    err, p = peak(lambda: nnar.verify(blob))
    assert isinstance(err, nnar.LimitExceeded), err  # max_descriptor_depth (before issue 15: msgpack's stack)
    assert p < 16 * MiB


def test_a_stream_declaring_a_huge_body_fails_on_what_it_really_holds():
    """From a pipe, a TENS body declared as 1 GiB with 100 bytes behind it: Truncated, having
    allocated at most one chunk."""
    b = Builder().raw_tensor("x", np.zeros(4, np.uint8))
    blob = b.build()
    # patch the TENS frame's body_length (and its header CRC) in place
    meta_end = 16 + 32 + struct.unpack_from("<I", blob, 16 + 16)[0]
    out = bytearray(blob)
    struct.pack_into("<Q", out, meta_end + 8, 1 << 30)
    dlen = struct.unpack_from("<I", out, meta_end + 16)[0]
    struct.pack_into("<I", out, meta_end + 28,
                     zlib.crc32(bytes(out[meta_end + 32:meta_end + 32 + dlen]), zlib.crc32(bytes(out[meta_end:meta_end + 28]))))
    err, p = peak(lambda: nnar.unpack(NonSeekable(bytes(out))))
    assert isinstance(err, (nnar.Truncated, nnar.BadLayout)), err
    assert p < CHUNK + SLACK, p
    err, p = peak(lambda: nnar.unpack(bytes(out)))
    assert isinstance(err, (nnar.Truncated, nnar.BadLayout)), err
    assert p < SLACK, p


#: Regression: a segment's raw_length was bounded only by max_tensor_bytes, and compared with
#: what its tensor needs only after decompressing (the array→bytes codec checked the stream in
#: step 5): a 33 KB archive of one 4-byte tensor cost 1 GiB and 1.5 s, ~520 KB cost 16 GiB.
#: Now ArrayBytesCodec.stream_lengths() is compared with raw_length before any decoding.
@pytest.mark.parametrize("how", READERS)
def test_a_frame_claiming_more_than_the_tensor_is_refused_before_decompressing(how):
    frame = zstandard.ZstdCompressor(level=1, write_content_size=True).compress(bytes(N))
    # raw_length N (within the limits) for a tensor of 4 bytes
    blob = Builder().tensor([("x", (4,))], "uint8", [("data", [zstd_stage()], N, frame)], decoded=b"").build()
    assert len(blob) < 4096
    err, p = peak(lambda: READERS[how](blob, nnar.DEFAULT_LIMITS))
    assert isinstance(err, nnar.CodecDataError), err
    assert p < SLACK, p


@pytest.fixture(scope="module")
def three_big(tmp_path_factory):
    """Three 16 MiB float32 tensors, stored byte planes + zstd, in an archive on disk."""
    d = tmp_path_factory.mktemp("big")
    rng = np.random.default_rng(0)
    tensors = {f"w{i}": (rng.standard_normal((2048, 2048)) * 0.02).astype(np.float32) for i in range(3)}
    nnar.pack(tensors, d / "m.nnar", threads=1)
    np.savez(d / "m.npz", **tensors)
    return d, 16 << 20


@pytest.mark.parametrize("step", ["verify", "unpack", "pack", "pack-threads"])
def test_whole_model_steps_hold_one_record_at_a_time(three_big, tmp_path, monkeypatch, step):
    """Issue 17 item 4: pack, unpack and verify cost about two tensors' worth (the streams and
    the array of one record), not the model, and not the previous record too (an enumerate's
    cached tuple and a list comprehension's loop variable each kept one alive)."""
    d, largest = three_big
    monkeypatch.setattr(nnar.archive, "WINDOW_BYTES", largest)  # tensors in flight: one's worth
    run = {"verify": lambda: nnar.verify(d / "m.nnar"),
           "unpack": lambda: nnar.unpack(d / "m.nnar", tmp_path / "out.safetensors"),
           "pack": lambda: nnar.pack(d / "m.npz", tmp_path / "p.nnar", threads=1),
           "pack-threads": lambda: nnar.pack(d / "m.npz", tmp_path / "p.nnar", threads=2)}[step]
    out, most = peak(run)
    assert not isinstance(out, nnar.NnarError), out
    assert most < 2.4 * largest, f"{step}: peak {most / largest:.2f}x the largest tensor"
