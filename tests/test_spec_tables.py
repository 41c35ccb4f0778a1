"""The spec's tables and the code's constants say the same thing (STYLE.md point 4)."""

import re
from pathlib import Path

import pytest

from nnar import constants as C
from nnar import dtypes
from nnar.codecs import registered
from nnar.errors import all_error_classes
from nnar.limits import DEFAULT_LIMITS

SPEC = Path(__file__).resolve().parents[1] / "spec"
FORMAT = (SPEC / "FORMAT.md").read_text()


def table_after(heading: str, text: str = FORMAT) -> list[list[str]]:
    """Rows (cells stripped) of the first Markdown table after ``heading``."""
    start = text.index(heading)
    rows = []
    for line in text[start:].splitlines()[1:]:
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not set("".join(cells)) <= set("-: "):
                rows.append(cells)
        elif rows:
            break
    return rows[1:]  # without the header row


def _hex(cell: str) -> bytes:
    return bytes.fromhex(re.match(r"`([0-9A-F ]+)`", cell).group(1))


def test_preamble_table():
    rows = {r[2].strip("`"): r for r in table_after("## 3. Preamble")}
    assert _hex(rows["magic"][4]) == C.MAGIC
    assert rows["format_major"][4] == f"`{C.FORMAT_MAJOR}`"
    assert rows["format_minor"][4].startswith(f"`{C.FORMAT_MINOR}`")
    assert sum(int(r[1]) for r in rows.values()) == C.PREAMBLE_SIZE


def test_frame_table_matches_struct():
    rows = table_after("### 4.1 Frame")
    assert [r[2].strip("`") for r in rows] == ["record_type", "record_flags", "body_length", "descriptor_length",
                                               "body_crc", "reserved", "header_crc"]
    offsets = [int(r[0]) for r in rows]
    sizes = [int(r[1]) for r in rows]
    assert offsets == [sum(sizes[:i]) for i in range(len(sizes))]
    assert sum(sizes) == C.FRAME_SIZE


def test_trailer_table():
    rows = table_after("## 7. Trailer")
    assert sum(int(r[1]) for r in rows) == C.TRAILER_SIZE
    assert _hex(rows[-1][4]) == C.END_MAGIC


def test_record_types_and_alignment():
    for tag in C.KNOWN_RECORD_TYPES:
        assert f"`{tag.decode()}`" in FORMAT
    assert "ceil(n / 64) * 64" in FORMAT and C.SEGMENT_ALIGNMENT == 64


def test_dtype_table():
    names = []
    for row in table_after("#### 5.2.2 Dtypes"):
        names += re.findall(r"`(\w+)`", row[0])
    assert sorted(names) == sorted(dtypes.DTYPE_NAMES)


def test_limits_table():
    for row in table_after("## 9. Limits"):
        name = row[0].strip("`")
        assert int(row[1].split()[0]) == getattr(DEFAULT_LIMITS, name), name


def test_error_code_table():
    spec_codes = {r[0].strip("`") for r in table_after("## 11. Error codes")}
    code_of = {cls.code for cls in all_error_classes()}
    assert spec_codes <= code_of, spec_codes - code_of


@pytest.mark.parametrize("codec_id", sorted(registered()))
def test_every_codec_has_a_page(codec_id):
    rows = {r[0].strip("`"): r for r in table_after("# Codecs", (SPEC / "codecs" / "README.md").read_text())}
    assert codec_id in rows
    page = SPEC / "codecs" / re.search(r"\((.+?)\)", rows[codec_id][3]).group(1)
    assert f"# `{codec_id}`" in page.read_text()
    kind = rows[codec_id][1].replace("→", "-")
    assert kind == registered()[codec_id].kind


def test_patch_tables_match_the_schema():
    from nnar.patching import schema
    patch = (SPEC / "patch.md").read_text()
    content_keys = list(schema.CONTENT_PATCH_KEYS) + list(schema.CONTENT_PATCH_OPTIONAL)
    assert [r[0].strip("`") for r in table_after("## 3. The PTCH descriptor", patch)] == content_keys
    assert [r[0].strip("`") for r in table_after("### 4.1 The record op map", patch)] == \
        list(schema.CONTENT_RECORD_KEYS)
    sources = [r[0].strip('`"') for r in table_after("### 4.2 Segment ops", patch)]
    assert sources == list(schema.SOURCES)
    # the byte patches of 1.3 (§9), still applied
    assert [r[0].strip("`") for r in table_after("### 9.1 The PTCH descriptor", patch)] == list(schema.PATCH_KEYS)
    assert [r[0].strip("`") for r in table_after("### 9.2 Record ops", patch)] == list(schema.RECORD_KEYS)
    assert [r[0].strip('`"') for r in table_after("#### Segment ops", patch)] == list(schema.SOURCES)
    assert all(f"`{op}`" in patch or f'`"{op}"`' in patch for op in schema.DELTA_OPS)
    assert "`META`, `MODL`, `TENS` or `ALIS`" in patch and set(schema.REBUILDABLE) == {"META", "MODL", "TENS", "ALIS"}
    assert "`META`, `MODL`, `TENS`, `ALIS` or `FILE`" in patch
    assert set(schema.CONTENT_REBUILDABLE) == set(schema.REBUILDABLE) | {"FILE"}
