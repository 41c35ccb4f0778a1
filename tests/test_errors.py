"""The one exception family: every class an NnarError and the builtin a caller would catch, each
with a unique code that never changes once released (the CLI and the vectors use them)."""

from __future__ import annotations

import io
import pickle
import re

import numpy as np
import pytest

import nnar
from nnar import errors as E
from nnar.errors import all_error_classes

#: code -> (class name, builtins it must also be). Frozen: a code never changes once released.
STABLE = {
    "nnar-error": ("NnarError", (Exception,)),
    "corrupt": ("CorruptArchive", (ValueError,)),
    "bad-magic": ("BadMagic", (ValueError,)),
    "truncated": ("Truncated", (ValueError, EOFError)),
    "checksum": ("ChecksumMismatch", (ValueError,)),
    "digest": ("DigestMismatch", (ValueError,)),
    "bad-descriptor": ("BadDescriptor", (ValueError,)),
    "bad-layout": ("BadLayout", (ValueError,)),
    "reserved-nonzero": ("ReservedNonZero", (ValueError,)),
    "codec-data": ("CodecDataError", (ValueError,)),
    "unsupported": ("Unsupported", (ValueError,)),
    "unsupported-version": ("UnsupportedVersion", (ValueError,)),
    "unsupported-codec": ("UnsupportedCodec", (ValueError,)),
    "unsupported-dtype": ("UnsupportedDtype", (ValueError,)),
    "unsupported-record": ("UnsupportedRecord", (ValueError,)),
    "limit-exceeded": ("LimitExceeded", (ValueError,)),
    "wrong-base": ("WrongBase", (ValueError,)),
    "not-found": ("TensorNotFound", (KeyError,)),
    "invalid-input": ("InvalidInput", (ValueError,)),
    "output-exists": ("OutputExists", (FileExistsError, OSError)),
    "missing-extra": ("MissingExtra", (ImportError,)),
    "writer-state": ("WriterStateError", (RuntimeError,)),
    "io": ("NnarIOError", (OSError,)),
    "output-bound": ("OutputBoundNotMet", (ValueError,)),
}
#: the archive-level codes of spec/FORMAT.md §11: all of them are corruption or "unsupported"
SPEC_CODES = {"bad-magic", "unsupported-version", "reserved-nonzero", "truncated", "checksum", "bad-descriptor",
              "bad-layout", "unsupported-record", "unsupported-codec", "unsupported-dtype", "codec-data", "digest",
              "limit-exceeded"}

CLASSES = all_error_classes()


def test_codes_are_unique():
    codes = [cls.code for cls in CLASSES]
    assert len(codes) == len(set(codes)), sorted(codes)


def test_every_class_is_known_and_its_code_is_stable():
    assert {cls.code: cls.__name__ for cls in CLASSES} == {code: name for code, (name, _) in STABLE.items()}


@pytest.mark.parametrize("code", sorted(STABLE))
def test_each_class_is_an_nnar_error_and_its_builtin(code):
    name, builtins = STABLE[code]
    cls = getattr(nnar, name)
    assert cls is getattr(E, name) and cls.code == code
    assert issubclass(cls, nnar.NnarError)
    for b in builtins:
        assert issubclass(cls, b), (name, b)
    assert re.fullmatch(r"[a-z]+(-[a-z]+)*", code)
    err = cls("expected 1, found 2", where="offset 7")
    assert err.code == code and err.message == "expected 1, found 2" and err.where == "offset 7"
    assert str(err) == "expected 1, found 2 (at offset 7)"
    assert str(cls("plain")) == "plain"


def test_spec_codes_are_archive_problems():
    by_code = {cls.code: cls for cls in CLASSES}
    assert SPEC_CODES <= set(by_code)
    for code in SPEC_CODES:
        assert issubclass(by_code[code], (nnar.CorruptArchive, nnar.Unsupported, nnar.LimitExceeded)), code


def test_tensor_not_found_is_not_quoted_like_a_key_error():
    err = nnar.TensorNotFound("tensor 'w': not in this archive")
    assert str(err) == "tensor 'w': not in this archive"
    assert str(KeyError("tensor 'w'")) == "\"tensor 'w'\""  # what the override avoids
    with nnar.open(io.BytesIO(nnar.pack({"x": np.zeros(1)}))) as a:
        with pytest.raises(KeyError) as e:
            a.read("w")
    assert str(e.value) == "tensor 'w': not in this archive"


def test_callers_catch_the_builtins():
    with pytest.raises(ValueError):
        nnar.unpack(b"not an archive")
    with pytest.raises(EOFError):
        nnar.unpack(nnar.pack({"x": np.zeros(1)})[:-1])
    with pytest.raises(OSError):
        nnar.open("/nonexistent/dir/x.nnar")


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_errors_survive_pickling(cls):
    """Errors cross process boundaries (multiprocessing, concurrent.futures) intact."""
    err = cls("expected a, found b", where="tensor 'x'")
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is cls and str(back) == str(err) and back.code == err.code
