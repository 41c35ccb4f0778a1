"""The reader rules of FORMAT.md §11.1 and the msgpack, zstd and schema rules of issue 14 item 3.

Every vector of tools/vectors_rules.py, built in memory, raises its code in order and at random
exactly as tests/test_vectors.py checks the frozen ones; the rules that accept something (a
non-shortest msgpack encoding, segments in any order, a newer minor's nested params) are checked
here on archives built for the purpose.
"""

from __future__ import annotations

import io
import struct
import sys
from pathlib import Path

import msgpack
import numpy as np
import pytest

import nnar
from nnar import pipeline as P
from nnar.codecs.byteplanes import BytePlanes
from nnar.codecs.raw import Raw
from nnar.codecs.sparse import Sparse
from nnar.codecs.zstd import PARAMETERS, Zstd
from nnar.container import framing as F
from nnar.limits import Limits

TOOLS = Path(__file__).resolve().parents[1] / "tools"
sys.path.insert(0, str(TOOLS))
import make_vectors as mv  # noqa: E402
import vectors_rules as vr  # noqa: E402

SPEC = (Path(__file__).resolve().parents[1] / "spec" / "FORMAT.md").read_text()


def _rule_vectors() -> dict:
    out = {}

    def add(name, data, code, why, random_code=None):
        assert name not in out, name
        out[name] = (data, code, random_code, why)
    vr.invalid_vectors_rules(add, mv)
    return out


VECTORS = _rule_vectors()


def _codes(data: bytes, tmp_path: Path, limits: Limits = nnar.Limits()) -> tuple[str, str]:
    """(code of a full check in order, code of a random-access reader checking every tensor),
    "ok" where nothing is raised; as tests/test_vectors.py reads the frozen files."""
    path = tmp_path / "v.nnar"
    path.write_bytes(data)
    found = []
    for check in (lambda: nnar.verify(path, limits), lambda: _verify_at_random(path, limits)):
        try:
            check()
            found.append("ok")
        except nnar.NnarError as e:
            found.append(e.code)
    return found[0], found[1]


def _verify_at_random(path, limits):
    with nnar.open(path, limits) as a:
        a.verify()


@pytest.mark.parametrize("name", sorted(VECTORS))
def test_rule_vector_raises_its_code(name, tmp_path):
    data, code, random_code, _ = VECTORS[name]
    assert _codes(data, tmp_path) == (code, random_code or code)


@pytest.mark.parametrize("name", sorted(VECTORS))
def test_rule_vector_is_named_in_the_spec(name):
    assert f"`{name}`" in SPEC, f"FORMAT.md does not cite vector {name}"


# -- rules that accept: no invalid vector can pin them --------------------------------------------


def _archive(edit_tens=None, *, minor=vr.MINOR, raw=None, pipeline=None, array=None) -> bytes:
    b = mv.base(minor=minor)
    vr.tens(b, "x", np.arange(6, dtype=np.float32) if array is None else array, pipeline, edit=edit_tens, raw=raw)
    return b.finish()


def _long_ints(x):
    """msgpack with every int written as uint 64 / int 64 and every str as str 32: the longest
    encodings there are (FORMAT.md §4.2, rule 5)."""
    if isinstance(x, bool) or x is None or isinstance(x, (bytes, float)):
        return vr.Raw(msgpack.packb(x, use_bin_type=True))
    if isinstance(x, int):
        return vr.Raw((b"\xcf" if x >= 0 else b"\xd3") + x.to_bytes(8, "big", signed=x < 0))
    if isinstance(x, str):
        data = x.encode()
        return vr.Raw(b"\xdb" + struct.pack(">I", len(data)) + data)
    if isinstance(x, dict):
        return vr.Pairs((_long_ints(k), _long_ints(v)) for k, v in x.items())
    return [_long_ints(v) for v in x]


def test_non_shortest_msgpack_is_accepted(tmp_path):
    data = _archive(raw=_long_ints)
    assert _codes(data, tmp_path) == ("ok", "ok")
    # the longest map and array headers too (map 32, array 32)
    b = mv.base(minor=vr.MINOR)
    desc, segs = vr.tens_parts("x", np.arange(6, dtype=np.float32))
    body = b"".join(msgpack.packb(k) + msgpack.packb(v, use_bin_type=True) for k, v in desc.items())
    b.record(b"TENS", b"\xdf" + struct.pack(">I", len(desc)) + body, segs, names=["x"])
    assert _codes(b.finish(), tmp_path) == ("ok", "ok")


def test_float32_is_a_number_in_fidelity(tmp_path):
    data = _archive(raw=lambda d: {**d, "fidelity": {"sqnr_db": vr.Raw(b"\xca" + struct.pack(">f", 31.5))}})
    assert _codes(data, tmp_path) == ("ok", "ok")
    with nnar.open(io.BytesIO(data)) as a:
        assert a.info("x").fidelity == {"sqnr_db": 31.5}


def test_an_integral_float_is_not_an_integer(tmp_path):
    data = _archive(lambda d: d["tensors"][0].__setitem__(1, [6.0]))
    assert _codes(data, tmp_path) == ("bad-descriptor", "bad-descriptor")


def test_segments_may_be_listed_in_any_order(tmp_path):
    """§5.2.3: the descriptor's order is the body's order; the codec finds streams by name."""
    w = (np.random.default_rng(3).normal(size=(8, 8)) * 0.05).astype(np.float32)
    b = mv.base(minor=vr.MINOR)
    desc, segs = vr.tens_parts("x", w, P.Pipeline(array_bytes=BytePlanes(), stream_chains=((), (Zstd(3),))))
    assert len(segs) == 4
    desc["segments"].reverse()
    segs.reverse()
    b.record(b"TENS", desc, segs, names=["x"])
    data = b.finish()
    assert _codes(data, tmp_path) == ("ok", "ok")
    np.testing.assert_array_equal(nnar.unpack(io.BytesIO(data))["x"], w)


def test_keys_of_a_later_minor_are_known_in_an_older_archive(tmp_path):
    """§10: what this reader knows is known whatever the archive's format_minor: fidelity (1.1)
    in a 1.0 archive, MODL and ALIS (1.2) in a 1.1 archive."""
    data = _archive(lambda d: d.update(fidelity={"method": "none"}), minor=0)
    assert _codes(data, tmp_path) == ("ok", "ok")
    b = mv.base(minor=1)
    mv.structure(b, "test", b"structure")
    b.tensor("x", np.arange(3, dtype=np.int8))
    mv.aliases(b, [("y", "x")])
    assert _codes(b.finish(), tmp_path) == ("ok", "ok")


def test_newer_minor_ignores_unknown_nested_params(tmp_path):
    """sparse.md decoding step 2 and §10: the nested codec's params follow the params rule."""
    sp = np.zeros(40, np.float32)
    sp[[2, 30]] = [1.0, 2.0]
    gaps = P.Pipeline((), Sparse("gaps", Raw(), 8))

    def extra(d):
        d["pipeline"][0]["params"]["values"]["future"] = 1
        d["pipeline"][0]["params"]["future"] = {"a": 1}
    assert _codes(_archive(extra, minor=vr.NEWER, pipeline=gaps, array=sp), tmp_path) == ("ok", "ok")
    assert _codes(_archive(extra, minor=vr.MINOR, pipeline=gaps, array=sp), tmp_path) == ("codec-data",) * 2


def test_aliases_count_toward_max_tensors_not_max_total_bytes(tmp_path):
    """§9: an alias is a tensor of the archive (max_tensors) but is not decoded again
    (max_total_bytes)."""
    b = mv.base(minor=vr.MINOR)
    b.tensor("x", np.zeros(4, np.float32))
    mv.aliases(b, [("y", "x"), ("z", "x")])
    data = b.finish()
    assert _codes(data, tmp_path, Limits(max_tensors=2)) == ("limit-exceeded", "limit-exceeded")
    assert _codes(data, tmp_path, Limits(max_tensors=3)) == ("ok", "ok")
    assert _codes(data, tmp_path, Limits(max_total_bytes=16)) == ("ok", "ok")
    assert _codes(data, tmp_path, Limits(max_total_bytes=15)) == ("limit-exceeded", "ok")


def test_zstd_override_ranges_are_the_specs():
    """spec/codecs/zstd.md: the ranges are written out, the same on every platform."""
    page = (Path(__file__).resolve().parents[1] / "spec" / "codecs" / "zstd.md").read_text()
    for key, (lo, hi) in PARAMETERS.items():
        assert f"| `{key}` | {lo} | {hi} |" in page
        Zstd(3, **{key: lo})
        Zstd(3, **{key: hi})
        for bad in (lo - 1, hi + 1):
            with pytest.raises(nnar.CodecDataError):
                Zstd(3, **{key: bad})


def test_zstd_encoder_is_given_the_level_then_the_overrides():
    """zstd.md "Encoding": with overrides, every parameter is the level's for an unknown size,
    then replaced; the content size is the input's length."""
    import zstandard
    data = bytes(range(256)) * 64
    params = zstandard.ZstdCompressionParameters.from_level(1, source_size=0, window_log=17, write_content_size=True,
                                                           write_checksum=False)
    assert Zstd(1, window_log=17).encode(data)[0] == zstandard.ZstdCompressor(compression_params=params).compress(data)
    plain = zstandard.ZstdCompressor(level=5, write_content_size=True, write_checksum=False).compress(data)
    assert Zstd(5).encode(data)[0] == plain
    assert zstandard.get_frame_parameters(plain).content_size == len(data)


def test_every_written_level_fits_the_window_limit():
    """No level writes a frame that decoders must refuse (zstd.md decoding step 1)."""
    import zstandard
    for level in (1, 3, 19, 22):
        params = zstandard.ZstdCompressionParameters.from_level(level, source_size=0)
        assert params.window_log <= 27, level


@pytest.mark.parametrize("data", [b"\x82\xa1a\x01\xa1a\x01", b"\x81\xa1a\x81\xc4\x01b\x01", b"\x81\xa1a\x81\x01\x01",
                                  b"\x81\xa1a\x81\xc0\x01", b"\x81\xa1a\x81\x91\x01\x01"], ids=repr)
def test_map_keys_are_str_and_unique_at_every_depth(data):
    """§4.2 rules 2 and 3 on the descriptor decoder itself: a key twice; a bin, int, nil or
    array key in a nested map."""
    with pytest.raises(nnar.BadDescriptor):
        F.unpack_descriptor(data, "here")


def test_every_structure_has_a_numbered_check_order():
    """§11.1 names the structures whose checks are ordered; each has a numbered list."""
    section = SPEC[SPEC.index("### 11.1"):SPEC.index("## 12.")]
    for title in ("Preamble", "Frame", "Descriptor", "META", "TENS", "Pipeline", "Segment chain", "MODL", "ALIS",
                  "PTCH", "Unknown record types", "INDX", "Trailer", "At random"):
        assert f"**{title}" in section, title
