"""Framing: bytes ↔ records. Knows lengths, offsets, checksums, versions and flags; treats codec
payloads as opaque named segments (spec/FORMAT.md §3–§8)."""
