"""Atomic outputs: write to a temporary file beside the target, then rename it into place.

A crash, a kill or a full disk leaves either the old file or the complete new one under the
final name, never a partial file; the input is never the output; an existing output is
replaced only when the caller says ``force``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import sys
from typing import BinaryIO, Iterator

from .errors import InvalidInput, NnarIOError, OutputExists


def same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, *, force: bool = False, inputs: tuple = ()) -> Iterator[BinaryIO]:
    """Yield a binary file whose contents replace ``path`` only if the block ends normally.

    ``path`` ``"-"`` is standard output (nothing to rename; written as it goes).
    """
    path = os.fspath(path)
    if path == "-":
        out = sys.stdout.buffer
        yield out
        out.flush()
        return
    for inp in inputs:
        if isinstance(inp, (str, os.PathLike)) and os.fspath(inp) != "-" and os.path.exists(path) \
                and same_file(os.fspath(inp), path):
            raise InvalidInput(f"output {path!r} is the input: expected a different file, the input is never overwritten")
    if os.path.isdir(path):
        raise InvalidInput(f"output {path!r}: expected a file name, found a directory")
    if os.path.exists(path) and not force:
        raise OutputExists(f"output {path!r} exists: expected a new file name, or --force to replace it")
    directory = os.path.dirname(os.path.abspath(path))
    try:
        fd, tmp = _create_temporary(directory, os.path.basename(path))
    except OSError as e:
        raise NnarIOError(f"cannot create a temporary file in {directory!r}: {e.strerror}") from e
    watched = _Watched(os.fdopen(fd, "wb"))
    f = watched.file
    try:
        yield watched
        f.flush()
        os.fsync(f.fileno())
        f.close()
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        if force:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails if someone created path meanwhile: never clobber without force
            os.unlink(tmp)
        _PENDING.discard(tmp)
    except BaseException as e:
        with contextlib.suppress(OSError):  # closing flushes: on a full disk that fails again
            f.close()
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        _PENDING.discard(tmp)
        if isinstance(e, FileExistsError) and not isinstance(e, OutputExists):
            raise OutputExists(f"output {path!r} appeared while writing: expected a new file name, or --force") from e
        if isinstance(e, OSError) and not hasattr(e, "code"):
            raise NnarIOError(f"writing {path!r} failed: {e.strerror or e}; nothing was written") from e
        failed = watched.failure
        if failed is not None and isinstance(e, Exception) and not hasattr(e, "code"):
            # a writer that wrapped the disk's error in its own (torch.save: RuntimeError)
            raise NnarIOError(f"writing {path!r} failed: {failed.strerror or failed}; nothing was written") from e
        raise


#: how much of the output's name the temporary's name repeats: a name near the system's 255-byte
#: limit leaves no room for the temporary's prefix and random part
TMP_NAME_KEEP = 96

#: temporaries that exist or are about to: a name is listed before its file is created and
#: removed from the list only once the file is gone or renamed, so that a signal arriving at any
#: moment (even inside the creation) leaves nothing :func:`remove_pending` can't find
_PENDING: set[str] = set()


def _create_temporary(directory: str, base: str) -> tuple[int, str]:
    flags = os.O_RDWR | os.O_CREAT  # read too: a writer may read back what it wrote (safetensors aliases)
    flags |= os.O_EXCL | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        name = os.path.join(directory, f".{base[:TMP_NAME_KEEP]}.{secrets.token_hex(4)}.tmp")
        _PENDING.add(name)
        try:
            return os.open(name, flags, 0o600), name
        except FileExistsError:
            _PENDING.discard(name)
        except OSError:
            _PENDING.discard(name)
            raise
    raise FileExistsError(errno.EEXIST, "no free temporary name")


def remove_pending() -> None:
    """Remove every temporary output still listed (the CLI calls it when a signal stops it)."""
    for name in list(_PENDING):
        with contextlib.suppress(OSError):
            os.unlink(name)
        _PENDING.discard(name)


class _Watched:
    """The temporary output, remembering the OSError a write or flush met, so that a full disk
    is reported as one even through a writer that turns it into its own exception."""

    def __init__(self, file: BinaryIO):
        self.file = file
        self.failure: OSError | None = None

    def write(self, data) -> int:
        try:
            return self.file.write(data)
        except OSError as e:
            self.failure = e
            raise

    def flush(self) -> None:
        try:
            self.file.flush()
        except OSError as e:
            self.failure = e
            raise

    def __getattr__(self, name: str):
        return getattr(self.file, name)

