"""Resource limits a reader enforces before it allocates anything (spec/FORMAT.md §9).

An archive may come from a stranger: every size it declares is compared with these limits, and
with the bytes actually present, before memory is reserved for it. The defaults admit any real
model of today and refuse absurd declarations; raise them explicitly for larger models.
"""

from __future__ import annotations

import dataclasses

from .errors import LimitExceeded

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30


@dataclasses.dataclass(frozen=True)
class Limits:
    #: bytes of one record descriptor (the msgpack map after each frame)
    max_descriptor_bytes: int = 64 * MiB
    #: msgpack objects in one descriptor, every value counted (map keys too): bytes alone do not
    #: bound what a descriptor costs to build, one byte (an empty map) being a 64-byte object
    max_descriptor_objects: int = 1 << 22
    #: nesting of msgpack maps and arrays in one descriptor (the descriptor map is depth 1)
    max_descriptor_depth: int = 32
    #: tensor records in one archive
    max_tensors: int = 1_000_000
    #: dimensions of one tensor
    max_rank: int = 32
    #: decoded bytes of one tensor, and of one segment before or after decoding
    max_tensor_bytes: int = 16 * GiB
    #: decoded bytes of all tensors together
    max_total_bytes: int = 256 * GiB
    #: stages in one pipeline, and codecs on one segment
    max_stages: int = 16
    #: segments of one tensor record
    max_segments: int = 256

    def check(self, what: str, value: int, limit_name: str, where: str | None = None) -> None:
        """Raise :class:`LimitExceeded` when ``value`` exceeds the limit ``limit_name``."""
        limit = getattr(self, limit_name)
        if value > limit:
            raise LimitExceeded(
                f"{what}: expected at most {limit} ({limit_name}), found {value}", where=where
            )

    def replace(self, **changes: int) -> "Limits":
        return dataclasses.replace(self, **changes)


DEFAULT_LIMITS = Limits()
