"""The frozen patch vectors of spec/vectors/patch: every valid patch rebuilds its result from its
base (a byte patch, 1.3: byte for byte; a content patch, 1.4: the result's content, whatever
bytes this machine's encoders write); every invalid one fails with exactly its documented error
code, and writes nothing. Never regenerated (tools/make_vectors.py only adds missing ones)."""

import io
import json
from pathlib import Path

import pytest

import nnar

PATCHES = Path(__file__).resolve().parents[1] / "spec" / "vectors" / "patch"
MANIFEST = json.loads((PATCHES / "manifest.json").read_text())


@pytest.mark.parametrize("name", sorted(MANIFEST["valid"]))
def test_valid_patch_rebuilds_its_result(name, tmp_path):
    entry = MANIFEST["valid"][name]
    out = tmp_path / "result.nnar"
    header = nnar.patch(PATCHES / entry["base"], PATCHES / entry["patch"], out)
    _is_result(entry, out.read_bytes())
    assert header.kind == entry.get("kind", "bytes")
    nnar.verify(out)


def _is_result(entry, built: bytes) -> None:
    expected = (PATCHES / entry["result"]).read_bytes()
    if entry.get("kind", "bytes") == "bytes":
        assert built == expected
        return
    # a content patch promises the content (and so every tensor), not bytes: another zstd may
    # store the rebuilt streams otherwise (spec/patch.md §6)
    with nnar.open(built) as a, nnar.open(expected) as b:
        assert a.content_digest() == b.content_digest() == a.stored_content
        assert a.names() == b.names() and a.metadata == b.metadata and a.structure == b.structure
        for n in b.names():
            assert a.read(n).tobytes() == b.read(n).tobytes()


@pytest.mark.parametrize("name", sorted(MANIFEST["valid"]))
def test_valid_patch_streams_from_a_pipe(name):
    """The patch read in order from a non-seekable stream, in small reads."""
    entry = MANIFEST["valid"][name]

    class Pipe(io.RawIOBase):
        def __init__(self, data):
            self.data, self.pos = data, 0

        def readable(self):
            return True

        def readinto(self, b):
            n = min(len(b), 777, len(self.data) - self.pos)
            b[:n] = self.data[self.pos: self.pos + n]
            self.pos += n
            return n

    out = io.BytesIO()
    nnar.patch(PATCHES / entry["base"], Pipe((PATCHES / entry["patch"]).read_bytes()), out)
    _is_result(entry, out.getvalue())


@pytest.mark.parametrize("name", sorted(MANIFEST["invalid"]))
def test_invalid_patch_fails_with_its_code_and_writes_nothing(name, tmp_path):
    entry = MANIFEST["invalid"][name]
    base = PATCHES / entry["base"]
    before = base.read_bytes()
    out = tmp_path / "result.nnar"
    with pytest.raises(nnar.NnarError) as e:
        nnar.patch(base, PATCHES / entry["patch"], out)
    assert e.value.code == entry["error"], str(e.value)
    assert not out.exists() and list(tmp_path.iterdir()) == []
    assert base.read_bytes() == before


@pytest.mark.parametrize("name", sorted(MANIFEST["valid"]))
def test_a_patch_is_not_a_model(name):
    """Read as a model archive, a patch stops at its PTCH record (FORMAT.md §5.6)."""
    path = PATCHES / MANIFEST["valid"][name]["patch"]
    for read in (lambda: nnar.unpack(path), lambda: nnar.open(path), lambda: nnar.unpack(path.read_bytes()),
                 lambda: list(nnar.StreamReader(io.BytesIO(path.read_bytes())))):
        with pytest.raises(nnar.UnsupportedRecord, match="nnar patch"):
            read()
