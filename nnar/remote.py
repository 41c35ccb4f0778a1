"""Archives read where they are stored: ``https://``, ``s3://``, ``gs://`` ... through fsspec.

An archive is laid out for this: the trailer says where the index is, and the index where each
record is, so listing an archive or reading one tensor fetches the last bytes, the index and
that tensor's record with HTTP range requests, never the whole file. Reads go through a small
read-ahead cache (``BLOCK`` bytes), which a random read of a large record does not defeat: a
read larger than the block is fetched as one range.

fsspec (and aiohttp for http) is an optional extra: ``pip install ".[remote]"``.
"""

from __future__ import annotations

import io
import os
import re

from .errors import MissingExtra, NnarIOError

BLOCK = 16 << 10  # read-ahead for the small reads of frames and descriptors (a record's head)
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_url(src) -> bool:
    """A string naming a remote archive (``scheme://...``), and not a local file of that name."""
    return isinstance(src, str) and bool(_SCHEME.match(src)) and not src.startswith("file://") \
        and not os.path.exists(src)


def open_url(url: str, block_size: int = BLOCK) -> "RemoteFile":
    try:
        import fsspec
    except ImportError:
        raise MissingExtra(f"reading {url!r} needs fsspec (and aiohttp for http/https): "
                           "pip install fsspec aiohttp, or pip install \".[remote]\" from the checkout") from None
    try:
        f = fsspec.open(url, "rb", block_size=block_size, cache_type="readahead").open()
    except ImportError as e:  # the protocol's own package (aiohttp, s3fs, gcsfs)
        raise MissingExtra(f"reading {url!r} needs {e.name or 'a package fsspec names'}: {e}") from None
    except FileNotFoundError:
        raise NnarIOError(f"cannot open {url!r}: not found") from None
    except Exception as e:  # network, auth, protocol errors: each library has its own types
        raise NnarIOError(f"cannot open {url!r}: {type(e).__name__}: {e}") from e
    return RemoteFile(f, url)


class RemoteFile(io.RawIOBase):
    """An fsspec file whose failures (a dropped connection, a server error mid-read) are
    :class:`NnarIOError`, like a local file's, whatever library raised them."""

    def __init__(self, f, url: str):
        self._f, self.name, self.url = f, None, url  # name None: no local path (no mmap)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def _call(self, fn, *args):
        try:
            return fn(*args)
        except NnarIOError:
            raise
        except Exception as e:
            raise NnarIOError(f"reading {self.url!r} failed: {type(e).__name__}: {e}") from e

    def readinto(self, b) -> int:
        data = self._call(self._f.read, len(b))
        n = len(data)
        memoryview(b).cast("B")[:n] = data
        return n

    def read(self, n: int = -1) -> bytes:
        return self._call(self._f.read, n)

    def seek(self, pos: int, whence: int = 0) -> int:
        return self._call(self._f.seek, pos, whence)

    def tell(self) -> int:
        return self._f.tell()

    @property
    def size(self) -> int:
        return self._f.size

    def close(self) -> None:
        try:
            self._f.close()
        finally:
            super().close()
