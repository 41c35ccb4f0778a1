"""Random archives, random damage: never different data silently.

Archives are built from random tensors, each with a random pipeline (the planner's choice, raw,
raw + zstd, byte planes, byte planes + the entropy profile), grouped or alone. Then one random
truncation, byte flip, insertion or deletion. Every byte of an archive is under a CRC or a
layout check (FORMAT.md §12), so a full check must fail; readers that skip the digest must fail
too or give back exactly the original tensors.
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import nnar
import strategies as S
from helpers import canonical_bytes
from nnar import pipeline as P
from nnar.codecs.byteplanes import BytePlanes
from nnar.codecs.raw import Raw
from nnar.codecs.zstd import ENTROPY, Zstd

PIPELINES = {
    "planner": None,  # the default choice; small tensors are grouped
    "raw": P.Pipeline(),
    "raw+zstd": P.Pipeline(array_bytes=Raw(), stream_chains=((Zstd(3),),)),
    "planes": P.Pipeline(array_bytes=BytePlanes()),
    "planes+entropy": P.Pipeline(array_bytes=BytePlanes(), stream_chains=((ENTROPY,),)),
}


@st.composite
def archives(draw):
    import io

    tensors = draw(S.tensor_dicts(max_size=4))
    buf = io.BytesIO()
    with nnar.ArchiveWriter(buf, metadata=draw(S.metadata())) as w:
        for name, t in tensors.items():
            w.write(name, t.array, dtype=t.write_dtype, pipeline=PIPELINES[draw(st.sampled_from(sorted(PIPELINES)))])
    return buf.getvalue(), {n: (t.shape, t.expected) for n, t in tensors.items()}


@st.composite
def damaged(draw):
    blob, original = draw(archives())
    kind = draw(st.sampled_from(["truncate", "flip", "insert", "delete"]))
    i = draw(st.integers(0, len(blob) - 1))
    if kind == "truncate":
        bad = blob[:i]
    elif kind == "flip":
        bad = blob[:i] + bytes([blob[i] ^ draw(st.integers(1, 255))]) + blob[i + 1:]
    elif kind == "insert":
        bad = blob[:i] + draw(st.binary(min_size=1, max_size=16)) + blob[i:]
    else:
        bad = blob[:i] + blob[i + draw(st.integers(1, 16)):]
    return bad, original


def read_in_order(blob: bytes) -> dict[str, np.ndarray]:
    return nnar.unpack(blob)


def read_at_random(blob: bytes) -> dict[str, np.ndarray]:
    with nnar.open(blob) as a:
        return {name: a.read(name) for name in reversed(a.names())}


def is_original(out: dict[str, np.ndarray], original) -> bool:
    return sorted(out) == sorted(original) and all(
        out[n].shape == shape and canonical_bytes(out[n]) == data for n, (shape, data) in original.items())


@given(archives())
def test_an_intact_random_archive_reads_back_exactly(case):
    blob, original = case
    assert len(nnar.verify(blob)) == len(original)
    for read in (read_in_order, read_at_random):
        assert is_original(read(blob), original)


@given(damaged())
def test_damage_is_an_error_or_the_original_data(case):
    bad, original = case
    with pytest.raises(nnar.NnarError):  # the full check sees every byte
        nnar.verify(bad)
    for read in (read_in_order, read_at_random):
        try:
            out = read(bad)
        except nnar.NnarError:
            continue
        assert is_original(out, original), read.__name__
