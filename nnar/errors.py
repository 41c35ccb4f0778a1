"""The one exception family of nnar.

Every failure nnar reports is an :class:`NnarError`. Each subclass also inherits the builtin
exception a caller would naturally catch (``ValueError``, ``KeyError``, ``ImportError``, ...) and
carries a stable ``code``: the invalid test vectors in ``spec/vectors`` name these codes, the CLI
prints them, and they never change once released.

Messages say what was expected, what was found and where (``where`` is usually a byte offset
or a tensor name), so a user can act on one line of output.
"""

from __future__ import annotations


class NnarError(Exception):
    """Root of every error nnar raises."""

    code = "nnar-error"

    def __init__(self, message: str, *, where: str | None = None):
        self.message = message
        self.where = where
        super().__init__(message if where is None else f"{message} (at {where})")

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return self.args[0] if self.args else self.code


# -- the archive is not what the spec says ------------------------------------------------------


class CorruptArchive(NnarError, ValueError):
    """The bytes are not a valid nnar archive."""

    code = "corrupt"


class BadMagic(CorruptArchive):
    code = "bad-magic"


class Truncated(CorruptArchive, EOFError):
    code = "truncated"


class ChecksumMismatch(CorruptArchive):
    code = "checksum"


class DigestMismatch(CorruptArchive):
    code = "digest"


class BadDescriptor(CorruptArchive):
    """A record's msgpack descriptor is malformed or breaks the schema."""

    code = "bad-descriptor"


class BadLayout(CorruptArchive):
    """Offsets, lengths, padding or the index disagree with each other or with the file."""

    code = "bad-layout"


class ReservedNonZero(CorruptArchive):
    code = "reserved-nonzero"


class CodecDataError(CorruptArchive):
    """A codec's payload or params cannot be decoded."""

    code = "codec-data"


# -- valid, but beyond what this reader supports --------------------------------------------------


class Unsupported(NnarError, ValueError):
    code = "unsupported"


class UnsupportedVersion(Unsupported):
    code = "unsupported-version"


class UnsupportedCodec(Unsupported):
    code = "unsupported-codec"


class UnsupportedDtype(Unsupported):
    code = "unsupported-dtype"


class UnsupportedRecord(Unsupported):
    code = "unsupported-record"


class WrongBase(NnarError, ValueError):
    """A patch was applied to an archive other than the one it was made from."""

    code = "wrong-base"


class LimitExceeded(NnarError, ValueError):
    """A declared size is larger than the reader's :class:`nnar.Limits` allow."""

    code = "limit-exceeded"


# -- the caller's side -------------------------------------------------------------------------


class TensorNotFound(NnarError, KeyError):
    code = "not-found"


class InvalidInput(NnarError, ValueError):
    """An input model file, argument or configuration is not acceptable."""

    code = "invalid-input"


class OutputExists(NnarError, FileExistsError):
    code = "output-exists"


class MissingExtra(NnarError, ImportError):
    """An optional dependency (torch, onnx, ...) is needed and not installed."""

    code = "missing-extra"


class WriterStateError(NnarError, RuntimeError):
    """An :class:`nnar.ArchiveWriter` method was called in the wrong state."""

    code = "writer-state"


class OutputBoundNotMet(NnarError, ValueError):
    """The model evaluated on the weights decoded from the archive just written exceeds the
    output-error bound it was packed for (the archive is not written)."""

    code = "output-bound"


class NnarIOError(NnarError, OSError):
    """The operating system refused a read or write (disk full, permission, ...)."""

    code = "io"


def all_error_classes() -> list[type[NnarError]]:
    """Every concrete class of the family, for the CLI and for tests of code uniqueness."""
    out, todo = [], [NnarError]
    while todo:
        cls = todo.pop()
        out.append(cls)
        todo.extend(cls.__subclasses__())
    return out
