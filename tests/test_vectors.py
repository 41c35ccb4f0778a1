"""The frozen vectors of spec/vectors: every valid archive decodes to its expected tensors, every
invalid one raises exactly its documented error code, in order and at random.

These files are never regenerated (tools/make_vectors.py only adds missing ones): a change that
breaks them breaks archives users already have.
"""

import json
from pathlib import Path

import numpy as np
import pytest

import nnar
from nnar.dtypes import storage_dtype

VECTORS = Path(__file__).resolve().parents[1] / "spec" / "vectors"
MANIFEST = json.loads((VECTORS / "manifest.json").read_text())


def _bits(a: np.ndarray) -> np.ndarray:
    """Compare floats as bit patterns: NaN payloads and -0.0 must survive."""
    return a.view(f"u{a.dtype.itemsize}") if a.dtype.kind == "f" else a


@pytest.mark.parametrize("name", sorted(MANIFEST["valid"]))
def test_valid_vector_decodes(name):
    entry = MANIFEST["valid"][name]
    path = VECTORS / "valid" / f"{name}.nnar"
    expected = dict(np.load(VECTORS / "valid" / f"{name}.npz"))
    assert set(expected) == set(entry["dtypes"])

    infos = nnar.verify(path)  # in order, every CRC and digest
    assert [i.name for i in infos] == list(entry["dtypes"])

    got = nnar.unpack(path)
    assert list(got) == list(entry["dtypes"])
    for tname, dt in entry["dtypes"].items():
        assert got[tname].dtype == storage_dtype(dt)
        assert got[tname].shape == expected[tname].shape
        np.testing.assert_array_equal(_bits(got[tname]), _bits(expected[tname]))

    with nnar.open(path) as a:  # at random
        assert a.metadata == entry["metadata"]
        assert a.names() == list(entry["dtypes"])
        for tname, dt in reversed(entry["dtypes"].items()):
            assert a.info(tname).dtype == dt
            np.testing.assert_array_equal(_bits(a.read(tname, verify=True)), _bits(expected[tname]))
        assert len(a.verify()) == len(entry["dtypes"])
        structure = (entry["structure"], (VECTORS / "valid" / f"{name}.structure").read_bytes()) \
            if "structure" in entry else None
        assert a.structure == structure  # the MODL record (FORMAT.md §5.4)
        if "content" in entry:  # since 1.4: what every reader must compute (FORMAT.md §5.3.1)
            assert a.content_digest().hex() == entry["content"] == a.stored_content.hex()
        import hashlib
        assert {p: hashlib.sha256(a.read_file(p)).hexdigest() for p in a.files()} == entry.get("files", {})
    with open(path, "rb") as f:  # in order: the structure comes before the first tensor
        assert nnar.archive.StreamReader(f).structure == structure


def test_aliases_vector_shares_arrays_and_stores_once():
    path = VECTORS / "valid" / "aliases.nnar"
    got = nnar.unpack(path)
    assert got["head.weight"] is got["emb.weight"] and got["tied.a2"] is got["tied.a"] is got["bias.a"]
    with nnar.open(path) as a:
        assert a.aliases() == {"head.weight": "emb.weight", "tied.b": "bias.b", "tied.a": "bias.a",
                               "tied.a2": "bias.a"}
        info = a.info("head.weight")
        assert info.alias_of == "emb.weight" and info.stored_bytes == 0 and info.shape == (3, 4)


def test_onnx_structure_vector_unpacks_to_a_model_that_runs(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    out = tmp_path / "add.onnx"
    nnar.unpack(VECTORS / "valid" / "structure-onnx.nnar", out)
    x = np.ones((2, 3), np.float32)
    (y,) = ort.InferenceSession(str(out)).run(None, {"x": x})
    np.testing.assert_array_equal(y, x + np.array([[0.5, -1.0, 2.0], [0.0, 3.25, -0.125]], np.float32))


@pytest.mark.parametrize("name", sorted(MANIFEST["invalid"]))
def test_invalid_vector_raises_its_code(name):
    entry = MANIFEST["invalid"][name]
    path = VECTORS / "invalid" / f"{name}.nnar"
    with pytest.raises(nnar.NnarError) as err:
        nnar.verify(path)
    assert err.value.code == entry["error"], str(err.value)

    random_code = entry.get("error_random_access", entry["error"])
    with pytest.raises(nnar.NnarError) as err:
        with nnar.open(path) as a:
            a.verify()
    assert err.value.code == random_code, str(err.value)


def test_aligned_raw_vector_maps_in_place():
    path = VECTORS / "valid" / "aligned-raw.nnar"
    with nnar.open(path) as a:
        m = a.mmap("aligned")
        assert isinstance(m, np.memmap) and m.offset % 64 == 0
        np.testing.assert_array_equal(m, np.arange(20, dtype=np.float64))


def test_every_error_code_has_a_vector():
    codes = {e["error"] for e in MANIFEST["invalid"].values()}
    documented = {"bad-magic", "unsupported-version", "reserved-nonzero", "truncated", "checksum", "bad-descriptor",
                  "bad-layout", "unsupported-record", "unsupported-codec", "unsupported-dtype", "codec-data",
                  "digest", "limit-exceeded"}
    assert documented <= codes, documented - codes
