"""Patches (spec/patch.md): diff then patch gives NEW's content back (and, with this machine's
encoders, NEW byte for byte) for any pair of archives, also where the applier's zstd encodes
differently and along a chain of updates; deltas are exact inverses; bad patches and wrong bases
fail cleanly and write nothing. Real fine-tunes of real models: tests/test_patch_models.py;
another zstd version for real: tests/test_patch_portable.py."""

import io
import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import nnar
from nnar import cli
from nnar.container.records import RecordReader
from nnar.patching import delta as D
from nnar.patching.apply import read_header
from nnar.patching.schema import PatchHeader, RecordOp, SegmentOp, parse_patch

from strategies import metadata, names, tensors

pytestmark = pytest.mark.filterwarnings("ignore::nnar.lossy.LossyWarning", "ignore::RuntimeWarning")

CONFIGS = (None, None, "fp16", {"quant": "kmeans", "bits": 4, "min_params": 16},
           {"quant": "uniform", "bits": 8, "min_params": 16})


def _pack(tensors_: dict, config=None, md=None) -> bytes:
    out = io.BytesIO()
    nnar.pack(tensors_, out, config=config, metadata=md)
    return out.getvalue()


def _content(data: bytes) -> bytes:
    with nnar.open(data) as a:
        return a.content_digest()


def _same_model(a: bytes, b: bytes) -> None:
    """Same tensors (names, order, dtypes, bits), aliases, structure and metadata."""
    with nnar.open(a) as x, nnar.open(b) as y:
        assert x.names() == y.names() and x.aliases() == y.aliases()
        assert x.metadata == y.metadata and x.structure == y.structure
        for n in y.names():
            p, q = x.read(n, verify=True), y.read(n, verify=True)
            assert p.dtype == q.dtype and p.shape == q.shape and p.tobytes() == q.tobytes(), n


def _roundtrip(old: bytes, new: bytes) -> bytes:
    patch = io.BytesIO()
    stat = nnar.diff(old, new, patch)
    assert stat.patch_length == len(patch.getvalue())
    out = io.BytesIO()
    header = nnar.patch(old, patch.getvalue(), out)
    assert header.kind == "content"
    assert (header.base_content, header.result_content) == (_content(old), _content(new))
    assert _content(out.getvalue()) == _content(new)
    _same_model(out.getvalue(), new)
    # this machine's encoders are the patch maker's: then the very bytes come back
    assert out.getvalue() == new
    return patch.getvalue()


# -- deltas ----------------------------------------------------------------------------------------


@given(st.sampled_from(D.WIDTHS if hasattr(D, "WIDTHS") else (1, 2, 4, 8)), st.sampled_from(("xor", "add")),
       st.integers(0, 64), st.randoms(use_true_random=False))
def test_delta_apply_inverts_make(width, op, n, rnd):
    b = bytes(rnd.getrandbits(8) for _ in range(n * width))
    r = bytes(rnd.getrandbits(8) for _ in range(n * width))
    d = D.make(r, b, op, width)
    assert d.dtype.itemsize == width and d.size == n
    assert D.apply(b, d, op, width) == r
    # a big-endian copy of the delta means the same numbers
    assert D.apply(b, d.astype(d.dtype.newbyteorder(">")), op, width) == r


def test_delta_of_equal_streams_is_zero_and_add_carries():
    s = np.arange(1000, dtype="<u4").tobytes()
    for op in ("xor", "add"):
        assert not D.make(s, s, op, 4).any()
    old = np.array([0x00FF, 0xFFFFFFFF], "<u4").tobytes()
    new = np.array([0x0100, 0x00000000], "<u4").tobytes()
    assert D.make(new, old, "add", 4).tolist() == [1, 1]  # one step, carried across bytes and wrapped
    assert D.make(new, old, "xor", 4).tolist() == [0x01FF, 0xFFFFFFFF]


def test_delta_refuses_a_partial_element():
    with pytest.raises(nnar.CodecDataError, match="whole number of 4-byte elements"):
        D.make(b"12345", b"12345", "xor", 4)


# -- the PTCH descriptor ---------------------------------------------------------------------------

segment_ops = st.one_of(st.just(SegmentOp("base")), st.just(SegmentOp("patch")),
                        st.builds(SegmentOp, st.just("delta"), st.sampled_from(("xor", "add")),
                                  st.sampled_from((1, 2, 4, 8))))
record_ops = st.one_of(
    st.builds(RecordOp, base=st.integers(0, 10 ** 6)),
    st.builds(RecordOp, base=st.none() | st.integers(0, 99), record_type=st.sampled_from(("META", "TENS", "MODL", "ALIS")),
              flags=st.integers(0, 3), descriptor=st.binary(max_size=40),
              segments=st.none() | st.lists(segment_ops, max_size=5).map(tuple),
              body_crc=st.none() | st.integers(0, 2 ** 32 - 1)))
content_record_ops = st.one_of(
    st.builds(RecordOp, base=st.integers(0, 10 ** 6)),
    st.builds(RecordOp, base=st.none() | st.integers(0, 99), record_type=st.sampled_from(("META", "TENS", "MODL", "ALIS")),
              descriptor=st.binary(max_size=40), segments=st.none() | st.lists(segment_ops, max_size=5).map(tuple)))
encoders = st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3)
digests = st.binary(min_size=32, max_size=32)
byte_headers = st.builds(PatchHeader, st.just("bytes"), st.integers(0, 65535),
                         st.lists(record_ops, min_size=1, max_size=6).map(tuple), encoders,
                         base_length=st.integers(0, 2 ** 63 - 1), base_digest=digests,
                         result_length=st.integers(0, 2 ** 63 - 1), result_digest=digests,
                         index_flags=st.integers(0, 3), index_descriptor=st.binary(max_size=64))
content_headers = st.builds(PatchHeader, st.just("content"), st.integers(0, 65535),
                            st.lists(content_record_ops, min_size=1, max_size=6).map(tuple), encoders,
                            base_content=digests, result_content=digests)


@given(byte_headers | content_headers)
def test_ptch_descriptor_round_trips(header):
    import msgpack
    packed = msgpack.unpackb(msgpack.packb(header.to_map(), use_bin_type=True), raw=False)
    assert parse_patch(packed, nnar.DEFAULT_LIMITS, "test", True) == header


def test_ptch_descriptor_is_one_kind_or_the_other():
    base = {"result_minor": 4, "records": [{"base": 0}], "encoder": {}}
    both = {**base, "base_content": bytes(32), "result_content": bytes(32), "base_digest": bytes(32)}
    for d in (base, both):
        with pytest.raises(nnar.BadDescriptor, match="either 'base_content'"):
            parse_patch(d, nnar.DEFAULT_LIMITS, "test", True)
    content = {**base, "base_content": bytes(32), "result_content": bytes(32)}
    with pytest.raises(nnar.BadDescriptor, match="needs format 1.4"):
        parse_patch(content, nnar.DEFAULT_LIMITS, "test", True, minor=3)
    with pytest.raises(nnar.BadDescriptor, match="unexpected keys"):  # a byte patch's key in a content patch
        parse_patch({**content, "records": [{"base": 0, "body_crc": 1}]}, nnar.DEFAULT_LIMITS, "test", True)


# -- diff and patch: any pair of archives ---------------------------------------------------------


@st.composite
def archive_pairs(draw):
    """OLD and NEW archives with something of everything: kept, nudged, renamed, removed, added,
    re-typed tensors, metadata changes, lossy configs."""
    old = {n: t.array for n, t in draw(st.dictionaries(names(12), tensors(), max_size=5)).items()}
    new = {}
    for name, a in old.items():
        fate = draw(st.sampled_from(("keep", "nudge", "rename", "remove", "retype")))
        if fate == "keep":
            new[name] = a
        elif fate == "nudge" and a.size and a.dtype.kind in "fiu":
            flat = np.array(a, copy=True).reshape(-1)
            i = draw(st.integers(0, flat.size - 1))
            flat.view(np.uint8)[i * flat.itemsize] ^= 1 << draw(st.integers(0, 7))
            new[name] = flat.reshape(a.shape)
        elif fate == "rename":
            new[draw(names(12).filter(lambda n: n not in old))] = a
        elif fate == "retype":
            new[name] = np.asarray(a).astype(np.float64) if a.dtype.kind in "fiub" else a
    for name, t in draw(st.dictionaries(names(12), tensors(), max_size=2)).items():
        new.setdefault(name, t.array)
    config = draw(st.sampled_from(CONFIGS))
    return _pack(old, config, draw(metadata())), _pack(new, draw(st.sampled_from((config, None))), draw(metadata()))


@settings(max_examples=40)
@given(archive_pairs())
def test_patch_rebuilds_new_byte_for_byte(pair):
    _roundtrip(*pair)


def _weights(seed, shape=(160, 160)):
    return (np.random.default_rng(seed).standard_normal(shape) * 0.05).astype(np.float32)


def _fine_tuned(a, seed, rel=1e-3):
    return (a + np.random.default_rng(seed).standard_normal(a.shape).astype(np.float32) * rel * 0.05).astype(np.float32)


def test_identical_archives_make_a_tiny_patch():
    old = _pack({f"w{i}": _weights(i) for i in range(30)})
    patch = _roundtrip(old, old)
    assert len(patch) < 30 * 64 + 600, len(patch)


def test_large_tensors_take_deltas_and_small_changes_cost_little():
    w = {f"w{i}": _weights(i) for i in range(3)}
    old = _pack(w)
    new = _pack({**w, "w1": _fine_tuned(w["w1"], 9)})
    stat = nnar.diff(old, new)
    by_name = {r.names[0]: r for r in stat.records if r.names}
    assert [by_name[n].action for n in ("w0", "w1", "w2")] == ["unchanged", "changed", "unchanged"]
    assert any("xor" in s or "add" in s for s in by_name["w1"].segments)
    # the sign, the exponent and the high mantissa bits did not move: far less than the tensor
    assert by_name["w1"].patch_bytes < 0.75 * by_name["w1"].new_bytes
    _roundtrip(old, new)


def test_rename_add_remove_are_reported():
    w = {f"w{i}": _weights(i) for i in range(3)}
    old = _pack(w)
    new = _pack({"w0": w["w0"], "moved": w["w1"], "fresh": _weights(7)})
    stat = nnar.diff(old, new)
    actions = {r.names[0]: (r.action, r.base_names) for r in stat.records if r.names}
    assert actions["moved"] == ("renamed", ("w1",))
    assert actions["fresh"][0] == "added"
    assert stat.removed == ["w2"]
    assert stat.counts() == {"unchanged": 1, "renamed": 1, "added": 1, "removed": 1}
    renamed = next(r for r in stat.records if r.names == ("moved",))
    assert renamed.patch_bytes < 512  # its descriptor; every stored byte is copied
    _roundtrip(old, new)


def test_quantized_indices_move_as_sparse_deltas():
    cfg = {"quant": "kmeans", "bits": 4}
    w = _weights(1, (256, 256))
    old, new = _pack({"w": w}, cfg), _pack({"w": _fine_tuned(w, 2, 1e-2)}, cfg)
    stat = nnar.diff(old, new)
    rec = next(r for r in stat.records if r.names == ("w",))
    assert any(s.startswith("indices ") and ("xor" in s or "add" in s) for s in rec.segments), rec.segments
    assert stat.patch_length < len(new) / 2
    _roundtrip(old, new)


def test_patch_is_bound_to_its_base_and_result(tmp_path):
    w = {"a": _weights(1), "b": _weights(2)}
    old, new = _pack(w), _pack({**w, "b": _fine_tuned(w["b"], 3)})
    other = _pack({**w, "a": _fine_tuned(w["a"], 4)})
    patch = io.BytesIO()
    nnar.diff(old, new, patch)
    out = tmp_path / "out.nnar"
    with pytest.raises(nnar.WrongBase, match="this patch applies to the archive with content digest"):
        nnar.patch(other, patch.getvalue(), out)
    assert not out.exists()
    with pytest.raises(nnar.Truncated):  # not an archive any more: a byte after its trailer
        nnar.patch(old + b"\0", patch.getvalue(), out)
    assert not out.exists()
    header = read_header(RecordReader(io.BytesIO(patch.getvalue()), patch=True))[0]
    assert header.base_content == _content(old)
    assert header.result_content == _content(new)


def test_corrupt_patches_leave_everything_intact(tmp_path):
    w = {"a": _weights(1), "b": _weights(2)}
    old_path, new_path, patch_path = tmp_path / "old.nnar", tmp_path / "new.nnar", tmp_path / "p.nnarpatch"
    old_path.write_bytes(_pack(w))
    new_path.write_bytes(_pack({**w, "b": _fine_tuned(w["b"], 3)}))
    nnar.diff(old_path, new_path, patch_path)
    good, before = patch_path.read_bytes(), old_path.read_bytes()
    out = tmp_path / "out.nnar"
    rng = np.random.default_rng(0)
    for i in [*rng.integers(0, len(good), 40), len(good) - 1, 20]:
        bad = bytearray(good)
        bad[i] ^= 1 << int(rng.integers(0, 8))
        for damaged in (bytes(bad), good[:i]):
            with pytest.raises(nnar.NnarError):
                nnar.patch(old_path, damaged, out)
            assert not out.exists()
            assert old_path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.nnar", "old.nnar", "p.nnarpatch"]


def test_outputs_are_atomic_and_never_the_base(tmp_path):
    w = {"a": _weights(1)}
    old, new, patch = tmp_path / "old.nnar", tmp_path / "new.nnar", tmp_path / "p.nnarpatch"
    old.write_bytes(_pack(w))
    new.write_bytes(_pack({"a": _fine_tuned(w["a"], 1)}))
    nnar.diff(old, new, patch)
    with pytest.raises(nnar.OutputExists):
        nnar.diff(old, new, patch)
    nnar.diff(old, new, patch, force=True)
    with pytest.raises(nnar.InvalidInput, match="is the input"):
        nnar.patch(old, patch, old, force=True)
    with pytest.raises(nnar.InvalidInput, match="read at random"):
        nnar.patch("-", patch, tmp_path / "x.nnar")
    out = tmp_path / "out.nnar"
    out.write_bytes(b"keep me")
    with pytest.raises(nnar.OutputExists):
        nnar.patch(old, patch, out)
    assert out.read_bytes() == b"keep me"
    nnar.patch(old, patch, out, force=True)
    assert out.read_bytes() == new.read_bytes()


def test_diff_refuses_what_is_not_an_archive(tmp_path):
    old = _pack({"a": _weights(1)})
    patch = io.BytesIO()
    nnar.diff(old, old, patch)
    with pytest.raises(nnar.UnsupportedRecord, match="nnar patch"):
        nnar.diff(old, patch.getvalue())
    with pytest.raises(nnar.BadMagic):
        nnar.diff(b"not an archive at all, really not" * 3, old)
    with pytest.raises(nnar.BadLayout, match="not a patch"):
        nnar.patch(old, old, io.BytesIO())


def test_cli_diff_stat_json_and_patch(tmp_path, capsys):
    w = {f"w{i}": _weights(i) for i in range(3)}
    old, new, patch, out = (tmp_path / n for n in ("old.nnar", "new.nnar", "u.nnarpatch", "out.nnar"))
    old.write_bytes(_pack(w))
    new.write_bytes(_pack({"w0": w["w0"], "w1": _fine_tuned(w["w1"], 5), "w9": w["w2"]}))
    assert cli.main(["diff", str(old), str(new), "-o", str(patch), "--stat"]) == 0
    text = capsys.readouterr()
    assert "unchanged" in text.out and "changed" in text.out and "renamed" in text.out and "w9 <- w2" in text.out
    assert "wrote" in text.err
    assert cli.main(["diff", str(old), str(new), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["patch_length"] == patch.stat().st_size
    assert report["counts"] == {"unchanged": 1, "changed": 1, "renamed": 1}
    assert cli.main(["patch", str(old), str(patch), "-o", str(out)]) == 0
    assert out.read_bytes() == new.read_bytes() and "(verified)" in capsys.readouterr().err
    assert cli.main(["patch", str(new), str(patch), "-o", str(tmp_path / "x.nnar")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("nnar: error[wrong-base]") and err.count("\n") == 1
    assert cli.main(["ls", str(patch)]) == 1
    assert "error[unsupported-record]" in capsys.readouterr().err
    assert cli.main(["diff", str(old), str(new)]) == 1
    assert "nothing to do" in capsys.readouterr().err
    # what a device compares with what its server publishes: the content digest, from verify
    # (computed) and ls (carried by the index)
    seen = []
    for cmd in (["verify", "--json", str(out)], ["verify", "--json", str(new)], ["ls", "--json", str(out)]):
        assert cli.main(cmd) == 0
        seen.append(json.loads(capsys.readouterr().out)["content"])
    assert len(set(seen)) == 1 and len(seen[0]) == 64
    assert seen[0] == nnar.open(new).content_digest().hex()


def test_apply_memory_is_bounded_by_the_largest_tensor(tmp_path):
    """40 tensors of 1 MiB, each fine-tuned: the applier holds a few records at a time, never the
    model (spec/patch.md §6)."""
    import tracemalloc
    w = {f"w{i}": _weights(i, (512, 512)) for i in range(40)}
    old, new, patch, out = (tmp_path / n for n in ("old.nnar", "new.nnar", "p.nnarpatch", "out.nnar"))
    nnar.pack(w, old)
    nnar.pack({k: _fine_tuned(v, 1) for k, v in w.items()}, new)
    nnar.diff(old, new, patch)
    tracemalloc.start()
    try:
        nnar.patch(old, patch, out)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert out.read_bytes() == new.read_bytes()
    model = 40 << 20
    print(f"apply peak {peak / 2**20:.1f} MiB")
    assert peak < 8 << 20, f"peak {peak / 2**20:.1f} MiB for a {model >> 20} MiB model of 1 MiB tensors"


def test_a_group_that_gains_and_loses_members_still_takes_deltas():
    """Small tensors share a record; adding or removing one must not resend its neighbours."""
    small = {f"l{i}.weight": _weights(i, (64, 64)) for i in range(40)}
    old = _pack(small)
    grown = {**small, "norm.weight": np.ones(64, np.float32)}
    shrunk = {k: v for k, v in small.items() if k != "l7.weight"}
    for new in (_pack(grown), _pack(shrunk)):
        stat = nnar.diff(old, new)
        assert stat.patch_length < 4096 < len(new) / 100, stat.patch_length
        _roundtrip(old, new)


def _another_zstd(monkeypatch):
    """This machine's zstd as a device's may be: valid frames of other bytes (another level, a
    content checksum), as zstd 1.5.5 gives where 1.5.7 made the patch."""
    import zstandard
    from nnar.codecs import zstd as Z

    def encode(self, data):
        level = 1 if self.level >= 19 else self.level + 2
        return zstandard.ZstdCompressor(level=level, write_content_size=True, write_checksum=True).compress(data), {}
    monkeypatch.setattr(Z.Zstd, "encode", encode)


@pytest.mark.parametrize("config", [None, "int8", {"quant": "kmeans", "bits": 4}])
def test_a_device_with_another_zstd_follows_a_chain_of_updates(monkeypatch, config):
    """v0 ships in the app; the server publishes v0→v1, v1→v2, v2→v3, each made from its own
    archives. The device rebuilds with its own zstd, so its bytes are not the server's, yet each
    next patch applies and every version decodes to the server's tensors."""
    w = {"big": _weights(1, (256, 256)), "fixed": _weights(2, (64, 64)), "norm": np.ones(64, np.float32)}
    versions = [w]
    for k in range(3):
        w = {**w, "big": _fine_tuned(w["big"], 10 + k, 1e-2)}
        if k == 1:
            w["fixed"] = _fine_tuned(w["fixed"], 20)
        versions.append(w)
    server = [_pack(v, config) for v in versions]
    patches = []
    for old, new in zip(server, server[1:]):
        out = io.BytesIO()
        nnar.diff(old, new, out)
        patches.append(out.getvalue())
    _another_zstd(monkeypatch)
    device, differs = server[0], False
    for k, p in enumerate(patches, 1):
        out = io.BytesIO()
        nnar.patch(device, p, out)
        device = out.getvalue()
        differs |= device != server[k]
        assert _content(device) == _content(server[k])
        _same_model(device, server[k])
        nnar.verify(device)
    assert differs, "the other zstd wrote the same bytes: this test proves nothing"


def test_a_byte_patch_of_format_1_3_still_applies_or_says_why(tmp_path):
    """1.3 patches bind exact bytes; a base rebuilt by a content patch is refused by name."""
    import json
    from pathlib import Path
    root = Path(__file__).parent.parent / "spec" / "vectors" / "patch"
    manifest = json.loads((root / "manifest.json").read_text())
    name, entry = next((n, e) for n, e in manifest["valid"].items() if e.get("kind", "bytes") == "bytes")
    base, patch = (root / entry["base"]).read_bytes(), (root / entry["patch"]).read_bytes()
    out = io.BytesIO()
    assert nnar.patch(base, patch, out).kind == "bytes"
    assert out.getvalue() == (root / entry["result"]).read_bytes()
    with nnar.open(base) as a:  # the same content, stored by this nnar (format 1.4): other bytes
        rewritten = _pack({n: a.read(n) for n in a.names()}, None, a.metadata)
    with pytest.raises(nnar.WrongBase, match="SHA-256"):
        nnar.patch(rewritten, patch, tmp_path / "x.nnar")
    assert not (tmp_path / "x.nnar").exists()
