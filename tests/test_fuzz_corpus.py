"""Replay the committed fuzz corpora (fuzz/corpus/<harness>/) through every harness's entry
point (archives, codecs, the CLI, patches, and the model files nnar pack reads), in the normal
test run and without atheris: each input must give a result or an
``nnar.NnarError`` (fuzz/common.py states the contract). Every file goes through every harness,
not only its own: an archive is a fine codec input and the other way round.

Reproducers of fixed violations go in fuzz/crashes/; they are replayed too.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

FUZZ = Path(__file__).resolve().parents[1] / "fuzz"
sys.path.insert(0, str(FUZZ))

HARNESSES = ("fuzz_archive", "fuzz_codecs", "fuzz_cli_verify", "fuzz_patch",
             # the input formats nnar pack reads (fuzz/input_formats.py): without torch or onnx
             # installed, their harnesses meet missing-extra errors, which the contract allows
             "fuzz_npz", "fuzz_safetensors", "fuzz_torch", "fuzz_onnx")
CORPUS = FUZZ / "corpus"


def _inputs() -> list[Path]:
    files = sorted(p for p in CORPUS.rglob("*") if p.is_file())
    files += sorted(p for p in (FUZZ / "crashes").glob("*") if p.is_file() and p.name != "README.md")
    return files


INPUTS = _inputs()


def test_the_corpora_are_there_and_small():
    for h in HARNESSES:
        name = importlib.import_module(h).NAME
        assert len(list((CORPUS / name).iterdir())) >= 20, name
    assert sum(p.stat().st_size for p in INPUTS) < 8 << 20


def test_the_harnesses_import_without_atheris(monkeypatch):
    monkeypatch.setitem(sys.modules, "atheris", None)  # import atheris now raises ImportError
    for name in ("common", *HARNESSES):
        monkeypatch.delitem(sys.modules, name, raising=False)
        mod = importlib.import_module(name)
        assert callable(getattr(mod, "test_one_input", None)) or name == "common"
    assert sys.modules["common"].atheris is None
    with pytest.raises(SystemExit, match="atheris is not installed"):
        sys.modules["common"].fuzz_main(lambda data: None)
    for name in ("common", *HARNESSES):  # the other tests get the normal modules back
        monkeypatch.delitem(sys.modules, name, raising=False)


@pytest.mark.parametrize("harness", HARNESSES)
def test_replay_every_input(harness):
    mod = importlib.import_module(harness)
    for path in INPUTS:
        try:
            mod.test_one_input(path.read_bytes())
        except Exception as e:  # one message naming the file, to reproduce it under the harness
            raise AssertionError(f"{harness} on {path.relative_to(FUZZ.parent)}: {type(e).__name__}: {e}") from e


def test_the_contract_check_can_fail():
    """The harnesses' check is not vacuous: a non-nnar exception and a MemoryError behind an
    NnarError are violations; an NnarError is not."""
    import nnar
    from common import ContractViolation, call

    def boom():
        raise IndexError("x")

    def bomb():
        try:
            raise MemoryError
        except MemoryError as e:
            raise nnar.CodecDataError("out of memory") from e

    def fine():
        raise nnar.Truncated("short")

    for fn in (boom, bomb):
        with pytest.raises(ContractViolation):
            call(fn)
    assert call(fine) is None
    assert call(lambda: 3) == 3


def test_a_new_codec_is_fuzzed_without_changing_the_harness(monkeypatch):
    """fuzz_codecs dispatches over the registry: a registered codec is reached by the first byte."""
    import numpy as np
    from nnar.codecs import _REGISTRY
    from nnar.codecs.abc import ArrayBytesCodec

    import fuzz_codecs
    from common import ContractViolation

    class Broken(ArrayBytesCodec):
        codec_id = "test.broken"

        def stream_names(self, spec, params):
            return ("a",)

        def decode(self, streams, spec, params):
            return np.zeros(1, np.int64)[5]  # an IndexError: a contract violation

    monkeypatch.setitem(_REGISTRY, Broken.codec_id, Broken)
    ids = fuzz_codecs.codec_ids()
    data = bytes([ids.index("test.broken"), 0, 0]) + b"\0\0\0\0" + b"stream"
    with pytest.raises(ContractViolation, match="IndexError"):
        fuzz_codecs.test_one_input(data)
