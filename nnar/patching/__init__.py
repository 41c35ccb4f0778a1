"""Patches: over-the-air updates from one archive to the next (spec/patch.md).

:mod:`.diff` makes a patch, :mod:`.apply` applies one; :mod:`.schema` is the PTCH record and
:mod:`.delta` the deltas between streams. ``nnar.diff`` and ``nnar.patch`` are the API.
"""

from .diff import PatchStat, RecordStat, stat_lines  # noqa: F401
from .schema import PatchHeader  # noqa: F401

__all__ = ["PatchStat", "RecordStat", "stat_lines", "PatchHeader"]
