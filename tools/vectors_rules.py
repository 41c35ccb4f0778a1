"""Invalid vectors for the reader rules of issue 14 item 3 (spec/FORMAT.md §11.1 and the rules
it cites): files with two faults, whose code the order of checks decides, and one file per
msgpack, zstd and schema rule that a reader written from the spec alone had to guess.

``tools/make_vectors.py`` calls :func:`invalid_vectors_rules` from ``invalid_vectors()``; the
vectors are frozen like every other. Each vector's name is cited next to its rule in FORMAT.md.
Everything is written with ``format_minor`` 3 (strict for this reader) unless the rule is about
a newer minor.
"""

from __future__ import annotations

import struct

import msgpack
import numpy as np

MINOR = 3  # strict for every reader of 1.3 or later
NEWER = 99  # a minor no reader knows: unknown keys are ignored (FORMAT.md §10)


# -- msgpack that a dict cannot express: duplicate keys, non-str keys, chosen encodings ----------


class Pairs(list):
    """A msgpack map written pair by pair, in order, duplicates kept."""


class Raw(bytes):
    """msgpack bytes inserted as they are (an invalid str, a never-used byte, a long encoding)."""


def pack(x) -> bytes:
    if isinstance(x, Raw):
        return bytes(x)
    if isinstance(x, dict):
        x = Pairs(x.items())
    if isinstance(x, Pairs):
        head = bytes([0x80 | len(x)]) if len(x) < 16 else b"\xde" + struct.pack(">H", len(x))
        return head + b"".join(pack(k) + pack(v) for k, v in x)
    if isinstance(x, list):
        head = bytes([0x90 | len(x)]) if len(x) < 16 else b"\xdc" + struct.pack(">H", len(x))
        return head + b"".join(pack(v) for v in x)
    return msgpack.packb(x, use_bin_type=True)


def bad_utf8(text: bytes) -> Raw:
    """A msgpack str whose bytes are ``text`` (str 8 header), valid UTF-8 or not."""
    return Raw(b"\xd9" + bytes([len(text)]) + text)


def tens_parts(name, array, pipeline=None, dtype=None):
    """A TENS descriptor (dict) and its (codecs, bytes) segments, as Builder.tensor writes them."""
    from nnar import pipeline as P
    from nnar.archive import digest_of
    from nnar.container import schema as S
    from nnar.dtypes import dtype_name_of, to_storage
    pipeline = pipeline or P.Pipeline()
    dt = dtype or dtype_name_of(np.asarray(array))
    arr = to_storage(np.asarray(array), dt)
    spec = S.record_spec(dt, [arr.shape])
    enc = P.encode(arr, spec, pipeline)
    desc = S.tensor_descriptor([(name, arr.shape)], dt, digest_of(arr), enc.pipeline, enc.segments)
    return desc, [(s.codecs, bytes(memoryview(s.data).cast("B"))) for s in enc.segments]


def tens(b, name, array, pipeline=None, *, edit=None, dtype=None, raw=None, **kw):
    """Append a TENS record; ``edit(desc)`` may change the dict, ``raw(desc) -> msgpack`` writes
    the descriptor by :func:`pack` (for what a dict cannot hold)."""
    desc, segs = tens_parts(name, array, pipeline, dtype)
    if edit:
        edit(desc)
    kw.setdefault("names", [name])
    return b.record(b"TENS", pack(raw(desc)) if raw else desc, segs, **kw)


def zstd_frame(content: bytes, window_log: int) -> bytes:
    """A valid zstd frame of one raw block, not single-segment, whose Window_Descriptor asks for
    2^window_log bytes of window (no encoder at any level writes one above 2^27)."""
    assert 256 <= len(content) < 65536 + 256
    header = b"\x28\xb5\x2f\xfd" + bytes([0x40, (window_log - 10) << 3]) + struct.pack("<H", len(content) - 256)
    return header + (1 | len(content) << 3).to_bytes(3, "little") + content


def frame_offsets(data: bytes):
    """(offset, record_type) of every record, walking the frames from the preamble."""
    pos, out = 16, []
    while pos + 32 <= len(data) - 32:
        rtype, _, body_length, dlen = struct.unpack_from("<4sIQI", data, pos)
        out.append((pos, rtype))
        pos += 32 + dlen + body_length
    return out


def invalid_vectors_rules(add, mv) -> None:
    """Every vector of FORMAT.md §11.1 and of the msgpack, zstd and schema rules of issue 14 item 3."""
    from nnar import constants as C
    from nnar import pipeline as P
    from nnar.codecs.byteplanes import BytePlanes
    from nnar.codecs.raw import Raw as RawCodec
    from nnar.codecs.sparse import Sparse
    from nnar.codecs.zstd import Zstd
    from nnar.container import framing as F
    from nnar.limits import DEFAULT_LIMITS

    x = np.arange(6, dtype=np.float32)
    zstd = P.Pipeline(array_bytes=RawCodec(), stream_chains=((Zstd(3),),))
    planes = P.Pipeline(array_bytes=BytePlanes(), stream_chains=((Zstd(3),),))

    def base(minor=MINOR):
        return mv.base(minor=minor)

    def small(minor=MINOR):
        b = base(minor)
        b.tensor("w", np.arange(12, dtype=np.float32).reshape(3, 4))
        b.tensor("z", np.zeros(256, np.int32), mv.ZSTD)
        return b

    good = small().finish()
    w_off, z_off = (o for o, t in frame_offsets(good) if t == b"TENS")

    def set_u32(data, offset, value):
        return mv.patch(data, offset, struct.pack("<I", value))

    # -- §11.1 preamble ------------------------------------------------------------------------
    add("order-short-file-bad-magic", b"PK\x03\x04" + bytes(8), "truncated",
        "12 bytes that are not the magic: shorter than a preamble, which is checked first")
    add("order-bad-magic-and-major-2", mv.patch(mv.patch(good, 0, b"\x89NNAX"), 8, struct.pack("<H", 2)),
        "bad-magic", "wrong magic and format_major 2: the magic first")
    add("order-major-2-and-archive-flags", mv.patch(mv.patch(good, 8, struct.pack("<H", 2)), 12, b"\x01"),
        "unsupported-version", "format_major 2 and archive_flags 1: the version first")
    add("order-archive-flags-and-bad-header-crc", set_u32(good, 12, 1), "reserved-nonzero",
        "archive_flags 1, which META's header CRC (covering the preamble) no longer matches: the preamble first")

    # -- §11.1 frame ---------------------------------------------------------------------------
    add("order-reserved-flag-and-bad-header-crc", set_u32(good, w_off + 4, 5), "reserved-nonzero",
        "record_flags bit 2 set, header CRC not fixed: reserved bits before header_crc")
    add("order-frame-reserved-and-bad-header-crc", set_u32(good, w_off + 24, 9), "reserved-nonzero",
        "frame reserved field 9, header CRC not fixed: reserved fields before header_crc")
    huge_dlen = set_u32(set_u32(good, w_off + 4, 5), w_off + 16, 0xFFFFFFF0)
    add("order-reserved-flag-and-descriptor-length-limit", huge_dlen, "reserved-nonzero",
        "record_flags bit 2 and a 4 GiB descriptor_length: the frame's fields before the limits")
    add("order-body-length-limit-and-bad-header-crc", mv.patch(good, w_off + 8, struct.pack("<Q", 1 << 40)),
        "limit-exceeded", "a 1 TiB body_length, header CRC not fixed: the limits before header_crc")
    add("order-descriptor-limit-and-truncated", set_u32(good, w_off + 16, DEFAULT_LIMITS.max_descriptor_bytes + 1),
        "limit-exceeded", "descriptor_length one above max_descriptor_bytes in a small file: the limit before "
        "the bytes present")

    # §9: body_length is bounded by max_tensor_bytes PLUS 64 x max_segments of padding
    slack = DEFAULT_LIMITS.max_tensor_bytes + 64 * DEFAULT_LIMITS.max_segments
    for name, length, code, why in [
            ("body-length-at-slack", slack, "truncated",
             "an unknown record declaring max_tensor_bytes + 64 x max_segments body bytes: within the limit, "
             "so the file is found short"),
            ("body-length-over-slack", slack + 1, "limit-exceeded",
             "an unknown record declaring max_tensor_bytes + 64 x max_segments + 1 body bytes")]:
        b = base()
        head = struct.pack("<4sIQIII", b"XTRA", 0, length, 1, 0, 0)
        b.buf += head + struct.pack("<I", F.crc32(b"\x80", F.crc32(head))) + b"\x80"  # an empty map
        add(name, bytes(b.buf), code, why, random_code="truncated")

    # -- §4.2 descriptor: limits, then msgpack, then the record's schema -------------------------
    b = base()
    b.tensor("x", x)
    b.record(b"XTRA", b"\x82\xa1a\xc0\xa1a" + b"\x91" * 32 + b"\xc0", flags=0)
    add("order-descriptor-too-deep-and-duplicate-key", b.finish(), "limit-exceeded",
        "a descriptor nesting 33 deep whose map holds the key a twice: the limits first")
    b = base()
    tens(b, "x", x, raw=lambda d: Pairs([*d.items(), ("dtype", "float32")]))
    add("descriptor-duplicate-key", b.finish(), "bad-descriptor", "a TENS descriptor with the key dtype twice")
    b = base()
    tens(b, "x", x, zstd, raw=lambda d: {**d, "segments": [{**d["segments"][0], "codecs": [
        {"codec": "nnar.zstd", "config": Pairs([("level", 3), ("level", 3)]), "params": {}}]}]})
    add("descriptor-duplicate-key-in-config", b.finish(), "bad-descriptor",
        "a zstd stage whose config holds level twice (equal values)")
    b = base(NEWER)
    tens(b, "x", x, raw=lambda d: Pairs([*d.items(), ("future", 1), ("future", 2)]))
    add("descriptor-duplicate-ignored-key", b.finish(), "bad-descriptor",
        "a newer minor's unknown key, twice: ignored keys must still be unique")
    b = base()
    tens(b, "x", x, zstd, raw=lambda d: {**d, "segments": [{**d["segments"][0], "codecs": [
        {"codec": "nnar.zstd", "config": {"level": 3}, "params": Pairs([(b"level", 3)])}]}]})
    add("descriptor-bin-key-in-params", b.finish(), "bad-descriptor", "a params map with a bin key")
    b = base()
    tens(b, "x", x, zstd, raw=lambda d: {**d, "segments": [{**d["segments"][0], "codecs": [
        {"codec": "nnar.zstd", "config": Pairs([(1, 3)]), "params": {}}]}]})
    add("descriptor-int-key-in-config", b.finish(), "bad-descriptor", "a config map with an integer key")
    b = mv.Builder(minor=MINOR)
    b.record(C.RECORD_META, pack({"nnar_version": "0.1.0", "source_format": "python",
                                  "metadata": Pairs([(b"k", "v")])}))
    add("descriptor-bin-key-in-metadata", b.finish(), "bad-descriptor", "a metadata map with a bin key")
    b = base(NEWER)
    tens(b, "x", x, raw=lambda d: Pairs([*d.items(), (b"future", 1)]))
    add("descriptor-bin-key-newer-minor", b.finish(), "bad-descriptor",
        "a bin key in an archive of a newer minor: not an unknown key to ignore, a key of the wrong type")
    b = mv.Builder(minor=MINOR)
    b.record(C.RECORD_META, pack({"nnar_version": "0.1.0", "source_format": "python",
                                  "metadata": {"k": bad_utf8(b"caf\xe9")}}))
    add("descriptor-invalid-utf8-in-metadata", b.finish(), "bad-descriptor", "a metadata value in Latin-1, not UTF-8")
    b = mv.Builder(minor=MINOR)
    b.record(C.RECORD_META, pack({"nnar_version": "0.1.0", "source_format": "python",
                                  "metadata": {"k": bad_utf8(b"\xed\xa0\x80")}}))
    add("descriptor-surrogate-in-str", b.finish(), "bad-descriptor", "a metadata value holding an encoded surrogate")
    b = base(NEWER)
    tens(b, "x", x, raw=lambda d: Pairs([*d.items(), ("future", bad_utf8(b"\xc0\x80"))]))
    add("descriptor-invalid-utf8-ignored-key", b.finish(), "bad-descriptor",
        "an overlong UTF-8 str as the value of a newer minor's key, which is ignored but must be msgpack")
    b = base()
    tens(b, "x", x, raw=lambda d: {**d, "fidelity": {"method": Raw(b"\xc1")}})
    add("descriptor-never-used-byte", b.finish(), "bad-descriptor", "the never-used msgpack byte 0xC1 as a value")
    b = base()
    tens(b, "x", x, raw=lambda d: {**d, "fidelity": {"when": Raw(b"\xd6\xff" + bytes(4))}})
    add("descriptor-timestamp", b.finish(), "bad-descriptor", "a msgpack timestamp (ext type -1)")
    b = base()
    b.record(C.RECORD_TENSOR, zstd_frame(pack({"tensors": [["x", [1]]]}) + bytes(300), 28),
             flags=C.RECORD_FLAG_MUST_UNDERSTAND | C.RECORD_FLAG_DESCRIPTOR_ZSTD, names=["x"])
    add("descriptor-zstd-window-too-large", b.finish(), "bad-descriptor",
        "a compressed descriptor in a frame asking for a 2^28-byte window")

    # -- §5.1 META ---------------------------------------------------------------------------
    b = mv.Builder(minor=MINOR)
    b.record(C.RECORD_META, {"nnar_version": "0.1.0", "metadata": {}})
    add("meta-missing-key", b.finish(), "bad-descriptor", "a META descriptor without source_format")
    b = mv.Builder(minor=MINOR)
    b.record(C.RECORD_META, {"nnar_version": "0.1.0", "source_format": "python", "metadata": {}, "extra": 1},
             body_suffix=b"\0")
    add("order-meta-body-and-unknown-key", b.finish(), "bad-layout",
        "a META record with a 1-byte body and an unknown key: the body before the descriptor's keys")

    # -- §5.2 TENS: keys, then dtype, then tensors in order, then digest, pipeline, segments ------
    b = base()
    tens(b, "x", x, edit=lambda d: (d["tensors"][0].__setitem__(1, [1] * 40), d.update(digest=bytes(31))))
    add("order-rank-limit-and-bad-digest", b.finish(), "limit-exceeded",
        "rank 40 and a 31-byte digest: tensors before digest")
    b = base()
    tens(b, "x", x, edit=lambda d: (d["tensors"].append(["x", "3"]),), names=["x", "x"])
    add("order-duplicate-name-and-bad-shape", b.finish(), "bad-layout",
        "a group whose second tensor repeats the first's name and has a str shape: the name before the shape",
        random_code="bad-layout")
    b = base()
    tens(b, "x", x, edit=lambda d: d["tensors"][0].__setitem__(1, [1 << 40, 1 << 40]),
         body_suffix=b"\0")
    add("order-huge-shape-and-body-layout", b.finish(), "limit-exceeded",
        "a 2^80-element float32 tensor whose body is one byte longer than its segments: the limit first")
    b = base()
    tens(b, "x", x, edit=lambda d: d.update(dtype="float8_e4m3"), body_suffix=b"\0")
    add("order-unknown-dtype-and-body-layout", b.finish(), "bad-layout",
        "an unknown dtype and a body longer than its segments: the layout is checked when the descriptor is, "
        "the dtype only when the record is counted or decoded")
    b = base()
    tens(b, "x", x, edit=lambda d: d.update(dtype="float8_e4m3"))
    data = bytearray(b.finish())
    data[b.entries[0][1] + b.entries[0][2] - 1] ^= 1
    add("order-unknown-dtype-and-bad-body-crc", bytes(data), "unsupported-dtype",
        "an unknown dtype and a damaged body: in order, the record's bytes cannot be counted toward "
        "max_total_bytes before the body is read; at random, the body's CRC comes first",
        random_code="checksum")
    b = base()
    tens(b, "x", x)
    tens(b, "y", x, edit=lambda d: d["pipeline"][0].update(codec="acme.magic"))
    data = bytearray(b.finish())
    data[b.entries[1][1] + b.entries[1][2] - 1] ^= 1
    add("order-bad-body-crc-and-unknown-codec", bytes(data), "checksum",
        "a damaged body and an unknown codec: body_crc before the pipeline")
    b = base()
    tens(b, "x", x)
    tens(b, "x", x, edit=lambda d: d["pipeline"][0].update(codec="acme.magic"))
    add("order-duplicate-name-and-unknown-codec", b.finish(), "bad-layout",
        "a name from an earlier record and an unknown codec: names before the pipeline")

    # padding (§5.2.3) is checked after body_crc and before the pipeline
    def padded(codec_id):
        b = base()
        off = tens(b, "x", np.arange(4, dtype=np.int32), edit=lambda d: d["pipeline"][0].update(codec=codec_id))
        data = bytearray(b.finish())
        dlen = struct.unpack_from("<I", data, off + 16)[0]
        body = off + 32 + dlen
        assert F.align_up(body) > body
        data[body] = 1
        return bytes(data), off, body
    data, off, body = padded("acme.magic")
    blen = struct.unpack_from("<Q", data, off + 8)[0]
    data = set_u32(data, off + 20, F.crc32(data[body: body + blen]))
    add("order-bad-padding-and-unknown-codec", mv.fix_header_crc(data, off), "reserved-nonzero",
        "non-zero padding (CRCs fixed) and an unknown codec: padding before the pipeline")
    data, off, body = padded("nnar.raw")
    add("order-bad-body-crc-and-bad-padding", data, "checksum",
        "non-zero padding, body_crc not fixed: body_crc before the padding")

    # -- §5.2.5 fidelity ---------------------------------------------------------------------
    b = base()
    tens(b, "x", x, edit=lambda d: d.update(fidelity={"exact": True}))
    add("fidelity-bool-value", b.finish(), "bad-descriptor", "a fidelity value true: a bool is not a number")
    b = base()
    tens(b, "x", x, edit=lambda d: d.update(fidelity={"€" * 342: 1.0}))
    add("fidelity-key-over-1024-bytes", b.finish(), "bad-descriptor",
        "a fidelity key of 342 characters, 1026 bytes of UTF-8: lengths are in bytes")

    # -- §6.1 pipelines and segment chains ----------------------------------------------------
    b = base()
    tens(b, "x", x, edit=lambda d: d["pipeline"].append({"codec": "acme.magic", "config": {}, "params": {}}))
    add("order-unknown-codec-and-pipeline-grammar", b.finish(), "unsupported-codec",
        "nnar.raw then acme.magic: every stage is resolved before the stages' kinds are checked")
    b = base()
    tens(b, "x", x, zstd, edit=lambda d: d["segments"][0]["codecs"][0].update(codec="acme.magic"))
    add("segment-chain-unknown-codec", b.finish(), "unsupported-codec", "a segment codec acme.magic")
    b = base()
    tens(b, "x", x, zstd, edit=lambda d: d["segments"][0]["codecs"][0].update(codec="nnar.raw", config={}))
    add("segment-chain-wrong-kind", b.finish(), "bad-descriptor", "nnar.raw (array-bytes) in a segment's codecs")

    def bad_first_frame(segs, desc):  # zero bytes where the first zstd frame was: not a frame
        return [(c, bytes(len(d))) if i == 0 else (c, d) for i, (c, d) in enumerate(segs)]
    w = (np.random.default_rng(14).normal(size=64) * 0.05).astype(np.float32)
    b = base()
    b.tensor("x", w, planes, segment_edit=bad_first_frame,
             edit=lambda d: d["segments"][-1]["codecs"][0].update(codec="acme.magic"))
    add("order-bad-stream-and-later-unknown-chain-codec", b.finish(), "unsupported-codec",
        "byte planes: the first segment's zstd frame zeroed (CRCs fixed), the last segment's codec unknown: "
        "every chain is checked before any segment is decoded")
    b = base()
    tens(b, "x", x, zstd, edit=lambda d: (d["segments"][0].update(name="other"),
                                              d["segments"][0]["codecs"][0].update(codec="acme.magic")))
    add("order-segment-names-and-unknown-chain-codec", b.finish(), "bad-descriptor",
        "a segment named other (nnar.raw needs data) whose codec is unknown: the streams before the chains")
    b = base()
    tens(b, "x", x, zstd, edit=lambda d: (d["segments"][0].update(raw_length=20),
                                              d["segments"][0]["codecs"][0].update(codec="acme.magic")))
    add("order-raw-length-and-unknown-chain-codec", b.finish(), "codec-data",
        "raw_length 20 for a 24-byte nnar.raw stream, and an unknown codec on it: stream lengths before the "
        "chains")
    b = base()
    tens(b, "x", x, zstd, edit=lambda d: d["segments"][0]["codecs"][0]["config"].update(window_log=28))
    add("zstd-config-window-log-28", b.finish(), "codec-data",
        "a zstd config with window_log 28: the range is [10, 27] (decoders refuse larger windows)")
    b = base(NEWER)
    tens(b, "x", x, zstd, edit=lambda d: d["segments"][0]["codecs"][0]["config"].update(future=1))
    add("zstd-config-unknown-key-newer-minor", b.finish(), "codec-data",
        "an unknown zstd config key in an archive of a newer minor: configs are closed at every minor")
    def windowed(segs, desc):
        return [(c, zstd_frame(x.tobytes() + bytes(232), 28)) for c, _ in segs]
    b = base()
    b.tensor("x", np.zeros(64, np.float32), zstd, segment_edit=windowed)
    add("zstd-window-too-large", b.finish(), "codec-data",
        "a valid zstd frame of 256 bytes whose Window_Descriptor asks for 2^28 bytes")

    sp = np.zeros(40, np.float32)
    sp[[2, 30]] = [1.0, 2.0]
    gaps = P.Pipeline((), Sparse("gaps", RawCodec(), 8))
    b = base(NEWER)
    b.tensor("x", sp, gaps, edit=lambda d: d["pipeline"][0]["config"]["values"].update(future=1))
    add("sparse-values-extra-key-newer-minor", b.finish(), "codec-data",
        "a sparse values map with a third key, in an archive of a newer minor: it is config, closed at every minor")
    b = base()
    b.tensor("x", sp, gaps, edit=lambda d: d["pipeline"][0]["params"]["values"].update(future=1))
    add("sparse-values-params-unknown-key", b.finish(), "codec-data",
        "an unknown key in the nested codec's params of a 1.3 archive")

    # -- §5.4 MODL, §5.5 ALIS, §5.6 PTCH -------------------------------------------------------
    b = base()
    mv.structure(b, "€" * 22, b"structure")
    b.tensor("x", x)
    add("model-format-66-bytes", b.finish(), "bad-descriptor",
        "a MODL format of 22 characters, 66 bytes of UTF-8: at most 64 bytes")
    b = base()
    b.tensor("x", x)
    mv.aliases(b, [], body_suffix=b"\0")
    add("order-alias-body-and-empty-aliases", b.finish(), "bad-layout",
        "an ALIS record with a 1-byte body and no aliases: the body before the descriptor's keys")
    b = base()
    b.tensor("w", np.zeros(4, np.float32))
    b.record(C.RECORD_PATCH, {"base_length": 0})
    add("ptch-not-first-model-reader", b.finish(), "unsupported-record",
        "a PTCH record after a TENS record, read as a model: reached in order, PTCH stops a model reader; "
        "at random, the index places it first", random_code="bad-layout")

    # -- §5.3 index ----------------------------------------------------------------------------
    for rtype in ("META", "INDX"):
        b = small()
        e = [list(x) for x in b.entries]
        e[1][0], e[1][3] = rtype, []
        add(f"index-{rtype.lower()}-entry", b.finish(entries=e), "bad-layout",
            f"the index lists a TENS record as {rtype}")

    # -- §7 trailer ------------------------------------------------------------------------------
    tr = len(good) - 32
    index_offset = struct.unpack_from("<Q", good, tr)[0]
    head = struct.pack("<QQI", index_offset, len(good), 1)
    add("order-trailer-crc-and-reserved", good[:tr] + head + struct.pack("<I", 0) + C.END_MAGIC, "checksum",
        "trailer reserved 1 and trailer_crc not fixed: trailer_crc first")
    head = struct.pack("<QQI", index_offset, len(good) + 8, 1)
    add("order-trailer-reserved-and-archive-length", good[:tr] + head + struct.pack("<I", F.crc32(head)) + C.END_MAGIC,
        "reserved-nonzero", "trailer reserved 1 and archive_length wrong: reserved before archive_length")
    add("order-end-magic-and-trailer-crc", good[:tr] + bytes(20) + good[tr + 20: -8] + b"NNARENDX", "truncated",
        "a trailer whose end_magic and CRC are both wrong: end_magic first")
