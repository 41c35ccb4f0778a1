"""Whole archives through the Python objects: ArchiveWriter → bytes → nnar.unpack / nnar.open /
StreamReader, bit for bit; metadata; names; the writer's state machine; memory mapping."""

from __future__ import annotations

import hashlib
import io
import os

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, strategies as st

import nnar
from nnar import constants as C
from nnar import pipeline as P
from nnar.archive import GROUP_MAX_BYTES, GROUP_TENSOR_MAX_BYTES
from nnar.codecs.byteplanes import BytePlanes
from nnar.codecs.raw import Raw
from nnar.codecs.zstd import Zstd

import helpers as H
import strategies as S
from archive_builder import Builder
from helpers import write_archive

END_MAGIC = b"NNAREND\x1a"


def check_info(info: nnar.TensorInfo, name: str, t: S.Tensor) -> None:
    assert info.name == name and info.dtype == t.dtype and info.shape == t.shape
    assert info.nbytes == len(t.expected)
    assert info.group >= 1
    if info.group == 1:  # alone in its record: the digest and the stored bytes are its own
        assert info.digest == hashlib.sha256(t.expected).digest()
        assert info.stored_bytes == sum(s["length"] for s in info.segments)
    else:
        assert info.stored_bytes <= sum(s["length"] for s in info.segments)


# -- round trips ---------------------------------------------------------------------------------


@given(S.tensor_dicts())
def test_unpack_gives_every_tensor_back_bit_for_bit(tensors):
    out = nnar.unpack(write_archive(tensors))
    assert list(out) == list(tensors)  # write order is file order
    for name, t in tensors.items():
        H.assert_same_tensor(out[name], t)


@given(S.tensor_dicts(), st.randoms(use_true_random=False))
def test_random_access_gives_every_tensor_back_in_any_order(tensors, rnd):
    with nnar.open(io.BytesIO(write_archive(tensors))) as a:
        assert a.names() == list(tensors) and len(a) == len(tensors)
        order = list(tensors)
        rnd.shuffle(order)
        for name in order:
            assert name in a
            check_info(a.info(name), name, tensors[name])
            H.assert_same_tensor(a.read(name), tensors[name])
            H.assert_same_tensor(a.read(name, verify=True), tensors[name])
        assert [n for n, _ in a.items()] == list(tensors)
        assert [i.name for i in a.verify()] == list(tensors)


@given(S.tensor_dicts())
def test_stream_reader_yields_infos_and_arrays_in_file_order(tensors):
    blob = write_archive(tensors)
    got = list(nnar.StreamReader(io.BytesIO(blob), verify=True))
    assert [i.name for i, _ in got] == list(tensors)
    for (info, arr), (name, t) in zip(got, tensors.items()):
        check_info(info, name, t)
        H.assert_same_tensor(arr, t)
    assert list(nnar.StreamReader(io.BytesIO(blob)).infos()) == [i for i, _ in got]


@given(S.tensor_dicts())
def test_writer_infos_are_what_readers_report(tensors):
    buf = io.BytesIO()
    with nnar.ArchiveWriter(buf) as w:
        for n, t in tensors.items():
            w.write(n, t.array, dtype=t.write_dtype)
    written = w.infos
    assert [i.name for i in written] == list(tensors)
    assert nnar.verify(buf.getvalue()) == written
    with nnar.open(io.BytesIO(buf.getvalue())) as a:
        assert a.infos() == written


@given(S.tensor_dicts())
def test_pack_of_a_mapping_round_trips_with_bfloat16_kept(tensors):
    blob = nnar.pack({n: t.for_pack() for n, t in tensors.items()})
    assert isinstance(blob, bytes)
    out = nnar.unpack(blob)
    for name, t in tensors.items():
        H.assert_same_tensor(out[name], t)
    assert [i.dtype for i in nnar.verify(blob)] == [t.dtype for t in tensors.values()]


@given(S.tensors(), st.sampled_from([
    P.Pipeline(),
    P.Pipeline(array_bytes=BytePlanes()),
    P.Pipeline(array_bytes=BytePlanes(), stream_chains=((Zstd(1),),)),
    P.Pipeline(stream_chains=((Zstd(7), Zstd(1)),)),
]))
def test_an_explicit_pipeline_is_used_and_round_trips(t, pipeline):
    buf = io.BytesIO()
    with nnar.ArchiveWriter(buf) as w:
        w.write("t", t.array, dtype=t.write_dtype, pipeline=pipeline)
    (info,) = w.infos
    assert info.group == 1  # an explicit pipeline gets a record of its own
    assert [s["codec"] for s in info.pipeline] == [pipeline.array_bytes.codec_id]
    H.assert_same_tensor(nnar.unpack(buf.getvalue())["t"], t)


def test_the_smallest_of_several_pipelines_is_kept():
    w1 = (np.random.default_rng(3).normal(size=5000) * 0.02).astype(np.float32)
    sizes = {}
    for pipe in (P.Pipeline(), P.Pipeline(array_bytes=BytePlanes(), stream_chains=((), (Zstd(3),)))):
        with nnar.ArchiveWriter(io.BytesIO()) as w:
            w.write("w", w1, pipeline=pipe)
        sizes[pipe.array_bytes.codec_id] = w.infos[0].stored_bytes
    with nnar.ArchiveWriter(io.BytesIO()) as w:
        w.write("w", w1)  # the planner's candidates
    (info,) = w.infos
    assert sizes["nnar.byteplanes"] < sizes["nnar.raw"]
    assert info.stored_bytes <= min(sizes.values())
    assert info.ratio == info.nbytes / info.stored_bytes > 1.1


def test_a_large_tensor_chooses_its_pipeline_on_a_sample_and_stays_exact():
    rng = np.random.default_rng(5)
    w = (rng.normal(size=(1280, 1100)) * 0.02).astype(np.float32)  # > 4 MiB: the sampled path
    w.ravel()[::997] = np.nan
    blob = nnar.pack({"w": w})
    assert len(blob) < 0.95 * w.nbytes
    H.assert_same_tensor(nnar.unpack(blob)["w"], w)


def test_empty_archive():
    blob = write_archive({})
    assert nnar.unpack(blob) == {} and nnar.verify(blob) == []
    with nnar.open(io.BytesIO(blob)) as a:
        assert a.names() == [] and len(a) == 0


def test_digest_is_sha256_of_little_endian_c_order_bytes():
    arr = np.arange(6, dtype=">i4").reshape(2, 3).T
    with nnar.ArchiveWriter(io.BytesIO()) as w:
        w.write("x", arr)
    (info,) = w.infos
    assert info.digest == hashlib.sha256(np.ascontiguousarray(arr).astype("<i4").tobytes()).digest()


def test_ml_dtypes_bfloat16_is_taken_as_bfloat16_bits():
    vals = np.array([1.0, -2.5, np.inf, np.nan], dtype=ml_dtypes.bfloat16)
    out = nnar.unpack(nnar.pack({"b": vals}))["b"]
    assert out.dtype == np.dtype("<u2") and out.tolist() == vals.view(np.uint16).tolist()
    assert np.array_equal(nnar.dtypes.bfloat16_to_float32(out), vals.astype(np.float32), equal_nan=True)


def test_big_endian_bfloat16_bit_patterns_are_accepted():
    bits = np.array([0x3F80, 0xC020, 0x7FC1], dtype=">u2")
    buf = io.BytesIO()
    with nnar.ArchiveWriter(buf) as w:
        w.write("b", bits, dtype="bfloat16")
    assert nnar.unpack(buf.getvalue())["b"].tolist() == [0x3F80, 0xC020, 0x7FC1]


# -- metadata ------------------------------------------------------------------------------------


@given(S.metadata())
def test_metadata_round_trips(md):
    blob = write_archive({"x": S.Tensor(np.ones(3, np.float32), "float32")}, metadata=md)
    with nnar.open(io.BytesIO(blob)) as a:
        assert a.metadata == md
        assert a.source_format == "python" and a.nnar_version == nnar.__version__
        assert a.format_version == (1, C.FORMAT_MINOR)
    r = nnar.StreamReader(io.BytesIO(blob))
    assert r.metadata == md and r.source_format == "python" and r.nnar_version == nnar.__version__
    with nnar.open(io.BytesIO(nnar.pack({"x": np.ones(2)}, metadata=md))) as a:
        assert a.metadata == md


def test_source_format_is_stored():
    blob = write_archive({}, source_format="onnx")
    with nnar.open(io.BytesIO(blob)) as a:
        assert a.source_format == "onnx"


@pytest.mark.parametrize("md", [{1: "a"}, {"a": 1}, {"a": None}, {"a": b"x"}, {b"k": "v"}, {"a": ["b"]}], ids=repr)
def test_metadata_must_map_strings_to_strings(md):
    with pytest.raises(nnar.InvalidInput):
        nnar.ArchiveWriter(io.BytesIO(), metadata=md)
    with pytest.raises(nnar.InvalidInput):
        nnar.pack({"x": np.ones(2)}, metadata=md)


def test_metadata_with_a_lone_surrogate_is_invalid_input():
    with pytest.raises(nnar.InvalidInput):
        nnar.ArchiveWriter(io.BytesIO(), metadata={"k": "\ud800"})


# -- names ---------------------------------------------------------------------------------------


@given(S.names())
def test_any_valid_name_round_trips(name):
    blob = nnar.pack({name: np.arange(3, dtype=np.int16)})
    assert list(nnar.unpack(blob)) == [name]
    with nnar.open(io.BytesIO(blob)) as a:
        assert a.names() == [name] and a.read(name).tolist() == [0, 1, 2]


def test_names_up_to_65535_utf8_bytes():
    ok = "é" * 32767 + "a"  # 65535 bytes
    too_long = "é" * 32768  # 65536 bytes
    assert nnar.unpack(nnar.pack({ok: np.zeros(1)})).keys() == {ok}
    with pytest.raises(nnar.InvalidInput):
        nnar.pack({too_long: np.zeros(1)})


@given(S.invalid_names())
def test_invalid_names_are_refused_at_write_and_nothing_is_written(name):
    buf = io.BytesIO()
    with nnar.ArchiveWriter(buf) as w:
        before = buf.tell()
        with pytest.raises(nnar.InvalidInput):
            w.write(name, np.zeros(2))
        assert buf.tell() == before
    assert nnar.unpack(buf.getvalue()) == {}


@pytest.mark.parametrize("name", [None, 1, b"w", ("w",)], ids=repr)
def test_non_string_names_are_invalid_input(name):
    with nnar.ArchiveWriter(io.BytesIO()) as w:
        with pytest.raises(nnar.InvalidInput):
            w.write(name, np.zeros(2))


def test_duplicate_names_are_refused_at_write_and_the_writer_goes_on():
    buf = io.BytesIO()
    with nnar.ArchiveWriter(buf) as w:
        w.write("a", np.ones(3))
        size = buf.tell()
        with pytest.raises(nnar.InvalidInput, match="unique"):
            w.write("a", np.zeros(3))
        assert buf.tell() == size
        w.write("b", np.zeros(3))
    out = nnar.unpack(buf.getvalue())
    assert list(out) == ["a", "b"] and out["a"].tolist() == [1, 1, 1]


# -- dtypes --------------------------------------------------------------------------------------


@pytest.mark.parametrize("arr", [
    np.zeros(2, np.complex64), np.array([object()]), np.array(["a"]), np.zeros(2, "datetime64[s]"),
    np.zeros(2, np.longdouble), np.zeros(2, "V4"), np.zeros(2, ml_dtypes.float8_e4m3fnuz),
], ids=lambda a: str(a.dtype))
def test_unsupported_dtypes_are_refused(arr):
    with nnar.ArchiveWriter(io.BytesIO()) as w:
        with pytest.raises(nnar.InvalidInput):
            w.write("x", arr)
    with pytest.raises((nnar.InvalidInput, nnar.UnsupportedDtype)):
        nnar.pack({"x": arr})


@pytest.mark.parametrize("arr", [np.zeros(2, np.float32), np.zeros(2, np.uint8), np.zeros(2, np.float16)],
                         ids=lambda a: str(a.dtype))
def test_bfloat16_needs_16_bit_integer_patterns(arr):
    with nnar.ArchiveWriter(io.BytesIO()) as w:
        with pytest.raises(nnar.InvalidInput, match="bfloat16"):
            w.write("x", arr, dtype="bfloat16")


@pytest.mark.parametrize("arr, dtype", [
    (np.array([1e10, 0.5]), "float16"), (np.array([300, -1]), "int8"), (np.array([-1], np.int32), "uint32"),
    (np.array([1.5], np.float32), "int32"), (np.array([1, 2], np.uint16), "float16"), (np.zeros(2, bool), "uint8"),
], ids=lambda v: str(v) if isinstance(v, str) else str(v.dtype))
def test_dtype_never_converts_values(arr, dtype):
    """``dtype=`` says how to read bits (uint16 as bfloat16); it must not cast, which would lose data."""
    with nnar.ArchiveWriter(io.BytesIO()) as w:
        with pytest.raises(nnar.InvalidInput):
            w.write("x", arr, dtype=dtype)


def test_dtype_may_restate_the_arrays_own_dtype():
    buf = io.BytesIO()
    with nnar.ArchiveWriter(buf) as w:
        w.write("x", np.array([1, 2], np.int16), dtype="int16")
        w.write("b", np.array([-16512], np.int16), dtype="bfloat16")  # int16 bit patterns are fine too
    out = nnar.unpack(buf.getvalue())
    assert out["x"].tolist() == [1, 2] and out["b"].tolist() == [0xBF80]
    assert [i.dtype for i in w.infos] == ["int16", "bfloat16"]


def test_an_unknown_dtype_name_is_invalid_input():
    with nnar.ArchiveWriter(io.BytesIO()) as w:
        with pytest.raises(nnar.InvalidInput):
            w.write("x", np.zeros(2), dtype="float8")


def test_error_message_names_the_tensor_once():
    with nnar.ArchiveWriter(io.BytesIO()) as w:
        with pytest.raises(nnar.InvalidInput) as e:
            w.write("x", np.zeros(2, np.float32), dtype="bfloat16")
    assert str(e.value).count("tensor 'x'") == 1, str(e.value)


# -- small tensors stored together --------------------------------------------------------------


def infos_of(tensors: dict, **kw) -> tuple[bytes, list[nnar.TensorInfo]]:
    buf = io.BytesIO()
    with nnar.ArchiveWriter(buf, **kw) as w:
        for name, arr in tensors.items():
            w.write(name, arr)
    return buf.getvalue(), w.infos


def test_small_tensors_of_one_dtype_share_a_record_in_order():
    tensors = {"b1": np.zeros(4, np.float32), "b2": np.ones(3, np.float32), "i": np.arange(2),
               "b3": np.full(2, 2, np.float32), "big": np.zeros(GROUP_TENSOR_MAX_BYTES // 4 + 1, np.float32), "b4": np.ones(1, np.float32)}
    blob, infos = infos_of(tensors)
    assert [i.name for i in infos] == list(tensors)
    assert [i.group for i in infos] == [2, 2, 1, 1, 1, 1]  # a new dtype or a large tensor ends a group
    assert infos[0].digest == infos[1].digest != infos[3].digest
    with nnar.open(io.BytesIO(blob)) as a:
        assert a.names() == list(tensors) and a.infos() == infos
        for name in reversed(tensors):
            H.assert_same_tensor(a.read(name, verify=True), tensors[name])
    out = nnar.unpack(blob)
    assert list(out) == list(tensors)


def test_a_group_closes_when_it_is_full():
    each = GROUP_TENSOR_MAX_BYTES // 4  # small enough to be grouped
    count = 3 * GROUP_MAX_BYTES // each
    tensors = {f"t{i}": np.full(each // 4, i, np.float32) for i in range(count)}
    blob, infos = infos_of(tensors)
    groups = [i.group for i in infos]
    assert max(groups) > 1 and len(set(i.digest for i in infos)) >= 3
    assert all(g * each <= GROUP_MAX_BYTES for g in groups)
    for name, arr in nnar.unpack(blob).items():
        H.assert_same_tensor(arr, tensors[name])


def test_grouping_can_be_turned_off():
    tensors = {"a": np.zeros(3, np.float32), "b": np.zeros(3, np.float32)}
    _, infos = infos_of(tensors, group_small=False)
    assert [i.group for i in infos] == [1, 1]


def test_tensors_read_from_a_group_do_not_share_memory():
    tensors = {"a": np.zeros(3, np.float32), "b": np.ones(3, np.float32)}
    blob, _ = infos_of(tensors)
    out = nnar.unpack(blob)
    assert not np.shares_memory(out["a"], out["b"])
    with nnar.open(io.BytesIO(blob)) as a:
        x, y = a.read("a"), a.read("a")
        assert not np.shares_memory(x, y)


def test_changing_an_array_after_write_does_not_change_the_archive():
    x = np.zeros(10, np.float32)
    buf = io.BytesIO()
    with nnar.ArchiveWriter(buf) as w:
        w.write("a", x)
        x[:] = 1  # e.g. a buffer reused for the next tensor
        w.write("b", x)
    out = nnar.unpack(buf.getvalue())
    assert out["a"].tolist() == [0.0] * 10 and out["b"].tolist() == [1.0] * 10


def test_a_duplicate_of_a_flushed_name_is_refused_by_that_write():
    buf = io.BytesIO()
    with nnar.ArchiveWriter(buf) as w:
        w.write("a", np.zeros(3))
        w.write("big", np.zeros(GROUP_TENSOR_MAX_BYTES // 8 + 1))  # flushes the group holding "a"
        with pytest.raises(nnar.InvalidInput):
            w.write("a", np.ones(3))
        w.write("c", np.ones(3))
    assert list(nnar.unpack(buf.getvalue())) == ["a", "big", "c"]


# -- the writer's state machine ------------------------------------------------------------------


def test_writer_states_and_wrong_state_calls():
    buf = io.BytesIO()
    w = nnar.ArchiveWriter(buf)
    assert w.state == "open"
    w.write("a", np.ones(2))
    w.close()
    assert w.state == "closed"
    size = len(buf.getvalue())
    with pytest.raises(nnar.WriterStateError, match="closed"):
        w.write("b", np.ones(2))
    with pytest.raises(nnar.WriterStateError):
        w.close()
    assert len(buf.getvalue()) == size  # nothing more was written
    assert list(nnar.unpack(buf.getvalue())) == ["a"]
    w.abort()  # aborting a closed writer changes nothing
    assert w.state == "closed"


def test_aborted_writer_refuses_everything():
    w = nnar.ArchiveWriter(io.BytesIO())
    w.abort()
    assert w.state == "aborted"
    with pytest.raises(nnar.WriterStateError, match="aborted"):
        w.write("a", np.ones(2))
    with pytest.raises(nnar.WriterStateError):
        w.close()


def test_an_exception_in_the_with_block_leaves_no_footer():
    buf = io.BytesIO()
    with pytest.raises(ZeroDivisionError):
        with nnar.ArchiveWriter(buf) as w:
            w.write("a", np.arange(100, dtype=np.float32))
            1 / 0
    assert w.state == "aborted"
    blob = buf.getvalue()
    assert blob and not blob.endswith(END_MAGIC) and b"INDX" not in blob
    with pytest.raises(nnar.Truncated):
        nnar.unpack(blob)
    with pytest.raises(nnar.Truncated):
        nnar.open(io.BytesIO(blob))
    with pytest.raises(nnar.Truncated):
        nnar.verify(blob)


def test_a_failed_write_inside_the_with_block_also_aborts():
    buf = io.BytesIO()
    with pytest.raises(nnar.InvalidInput):
        with nnar.ArchiveWriter(buf) as w:
            w.write("a", np.ones(3))
            w.write("bad\n", np.ones(3))
    assert w.state == "aborted"
    with pytest.raises(nnar.Truncated):
        nnar.unpack(buf.getvalue())


def test_a_failing_file_aborts_the_writer_with_nnar_io_error():
    class Full(io.BytesIO):
        def write(self, b):
            if self.tell() > 200:
                raise OSError(28, "No space left on device")
            return super().write(b)

    w = nnar.ArchiveWriter(Full())
    with pytest.raises(nnar.NnarIOError):
        w.write("a", np.random.default_rng(0).integers(0, 255, GROUP_TENSOR_MAX_BYTES + 1, dtype=np.uint8))
    assert w.state == "aborted"
    with pytest.raises(nnar.WriterStateError):
        w.close()


# -- random access details -----------------------------------------------------------------------


def test_missing_tensor_is_tensor_not_found(small_model):
    with nnar.open(io.BytesIO(nnar.pack(small_model))) as a:
        assert "nope" not in a
        for call in (a.read, a.info, a.mmap):
            with pytest.raises(nnar.TensorNotFound) as e:
                call("nope")
            assert isinstance(e.value, KeyError)
            assert str(e.value).startswith("tensor 'nope'")


def test_random_access_needs_a_seekable_file(small_model):
    r, w = os.pipe()
    os.write(w, nnar.pack(small_model)[:4096])
    os.close(w)
    with os.fdopen(r, "rb") as f:
        with pytest.raises(nnar.NnarIOError, match="seekable"):
            nnar.open(f)


def test_open_missing_path_or_directory_is_nnar_io_error(tmp_path):
    with pytest.raises(nnar.NnarIOError):
        nnar.open(tmp_path / "missing.nnar")
    with pytest.raises(nnar.NnarIOError):
        nnar.open(tmp_path)


def test_open_a_path_and_close_it(tmp_path, small_model):
    path = tmp_path / "m.nnar"
    nnar.pack(small_model, path)
    with nnar.open(path) as a:
        assert a.path == str(path)
        f = a._f
        assert sorted(a.names()) == sorted(small_model)
    assert f.closed


def test_an_archive_embedded_in_a_larger_file(tmp_path, small_model):
    """Offsets count from the archive's first byte (spec §1), wherever the file object starts."""
    blob = nnar.pack(small_model)
    prefix = b"some other container header" * 3  # 84 bytes: segment alignment is relative to the archive
    path = tmp_path / "embedded.bin"
    path.write_bytes(prefix + blob)
    with open(path, "rb") as f:
        f.seek(len(prefix))
        with nnar.open(f) as a:
            for name, arr in small_model.items():
                H.assert_same_tensor(a.read(name, verify=True), arr)
    with open(path, "rb") as f:
        f.seek(len(prefix))
        assert [i.name for i, _ in nnar.StreamReader(f, verify=True)] == list(small_model)


# -- memory mapping ------------------------------------------------------------------------------


def test_mmap_of_a_raw_tensor_is_a_memmap_at_a_64_aligned_offset(tmp_path):
    rng = np.random.default_rng(9)
    tensors = {
        "odd": np.arange(3, dtype=np.uint8),  # makes what follows start off 64
        "raw": rng.normal(size=(37, 5)).astype(np.float32),
        "scalar": np.array(2.5),
        "bf16": np.array([1.0, 2.0, 3.0], ml_dtypes.bfloat16),
        "empty": np.zeros((0, 4), np.int16),
    }
    path = tmp_path / "m.nnar"
    with open(path, "wb") as f, nnar.ArchiveWriter(f) as w:
        for name, arr in tensors.items():
            w.write(name, arr, pipeline=P.Pipeline())  # raw, verbatim
    blob = path.read_bytes()
    with nnar.open(path) as a:
        for name, arr in tensors.items():
            m = a.mmap(name)
            H.assert_same_tensor(np.asarray(m), arr)
            if arr.size:
                assert isinstance(m, np.memmap)
                assert m.offset % 64 == 0
                assert blob[m.offset:m.offset + arr.nbytes] == H.canonical_bytes(arr)
                assert not m.flags.writeable


def test_mmap_refuses_tensors_not_stored_raw(tmp_path):
    path = tmp_path / "m.nnar"
    with open(path, "wb") as f, nnar.ArchiveWriter(f) as w:
        w.write("z", np.zeros(1000, np.float32), pipeline=P.Pipeline(stream_chains=((Zstd(3),),)))
        w.write("p", np.zeros(10, np.float32), pipeline=P.Pipeline(array_bytes=BytePlanes()))
        w.write("r", np.zeros(10, np.float32), pipeline=P.Pipeline(array_bytes=Raw()))
    with nnar.open(path) as a:
        for name in ("z", "p"):
            with pytest.raises(nnar.InvalidInput, match="raw"):
                a.mmap(name)
        assert a.mmap("r").tolist() == [0.0] * 10
    with nnar.open(io.BytesIO(path.read_bytes())) as a:  # no file on disk to map
        with pytest.raises(nnar.InvalidInput):
            a.mmap("r")


# -- the layout on disk --------------------------------------------------------------------------


def test_writer_output_equals_an_archive_built_from_the_spec():
    """An independent writer (tests/archive_builder.py, from spec/FORMAT.md alone) lays out the
    same raw tensors byte for byte like ArchiveWriter does."""
    tensors = {"a": np.arange(5, dtype=np.int16), "b": np.array(1.5, np.float64), "c": np.zeros((2, 0), bool),
               "😀": np.array([True, False])}
    buf = io.BytesIO()
    with nnar.ArchiveWriter(buf, metadata={"k": "v"}) as w:
        for name, arr in tensors.items():
            w.write(name, arr, pipeline=P.Pipeline())
    b = Builder({"k": "v"}, nnar_version=nnar.__version__)
    for name, arr in tensors.items():
        b.raw_tensor(name, arr)
    assert buf.getvalue() == b.build(content=True)


def test_grouped_small_tensors_equal_a_group_built_from_the_spec():
    small = {"a": np.arange(5, dtype=np.int16), "b": np.array(-1, np.int16), "c": np.ones((2, 3), np.int16)}
    buf = io.BytesIO()
    with nnar.ArchiveWriter(buf) as w:  # 24 bytes together: one record, stored raw
        for name, arr in small.items():
            w.write(name, arr)
    assert [i.group for i in w.infos] == [3, 3, 3]
    assert buf.getvalue() == Builder(nnar_version=nnar.__version__).raw_group(small).build(content=True)


def test_info_json_and_pipeline_description():
    w = (np.random.default_rng(0).normal(size=1000) * 0.02).astype(np.float32)
    with nnar.ArchiveWriter(io.BytesIO()) as wr:
        wr.write("w", w, pipeline=P.Pipeline(array_bytes=BytePlanes(), stream_chains=((), (Zstd(3),))))
    (info,) = wr.infos
    j = info.to_json()
    assert j["name"] == "w" and j["dtype"] == "float32" and j["shape"] == [1000] and j["nbytes"] == 4000
    assert j["stored_bytes"] == info.stored_bytes and j["digest"] == info.digest.hex()
    assert j["pipeline"].startswith("nnar.byteplanes[") and "p3:nnar.zstd" in j["pipeline"]
    assert info.describe_pipeline() == j["pipeline"] and j["group"] == 1
