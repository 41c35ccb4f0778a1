"""Hypothesis strategies shared by the test files.

A drawn :class:`Tensor` is an *input* array exactly as a user might hand it to nnar (any
supported dtype, 0-d, empty or odd shapes, transposed, strided, reversed, unaligned or
big-endian) together with its spec dtype name. ``Tensor.expected`` is what nnar must give
back: the little-endian C-order bytes (``helpers.canonical_bytes``: integer byte shuffling
only, never a float cast, so NaN payloads are compared as bit patterns).
"""

from __future__ import annotations

import dataclasses

import ml_dtypes
import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from helpers import INT_DTYPES, STORAGE, c_order, canonical_bytes

FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")
DTYPES = ("bool", *INT_DTYPES, *FLOAT_DTYPES)

#: spec name -> (total bits, exponent bits, mantissa bits)
FLOAT_FORMATS = {"float16": (16, 5, 10), "bfloat16": (16, 8, 7), "float32": (32, 8, 23), "float64": (64, 11, 52)}

# -- tensors -------------------------------------------------------------------------------------


@dataclasses.dataclass
class Tensor:
    array: np.ndarray  # the input, in whatever layout was drawn
    dtype: str  # spec name; for "bfloat16" the array holds uint16 bit patterns (or ml_dtypes)
    layout: str = "c"

    @property
    def expected(self) -> bytes:
        return canonical_bytes(self.array)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    @property
    def write_dtype(self) -> str | None:
        """What to pass as ``dtype=`` to ``ArchiveWriter.write`` (None: nnar infers it)."""
        return "bfloat16" if self.dtype == "bfloat16" and self.array.dtype.name != "bfloat16" else None

    def for_pack(self) -> np.ndarray:
        """The array as ``nnar.pack({...})`` takes it (which has no ``dtype=``): bf16 as ml_dtypes."""
        if self.dtype != "bfloat16" or self.array.dtype.name == "bfloat16":
            return self.array
        return c_order(self.array).astype("<u2").view(ml_dtypes.bfloat16)

    def __repr__(self) -> str:  # hypothesis prints failing examples with this
        return f"Tensor({self.dtype}, shape={self.shape}, layout={self.layout}, bits={self.expected.hex()[:64]})"


def float_bits(dtype: str) -> st.SearchStrategy[int]:
    """Bit patterns of a float format, weighted toward the values that break codecs: NaNs with
    arbitrary payloads and either sign, ±inf, ±0, subnormals, and weight-like values near 1."""
    bits, e, m = FLOAT_FORMATS[dtype]
    exp_max, bias = (1 << e) - 1, (1 << (e - 1)) - 1
    sign = st.integers(0, 1)
    mant = st.integers(0, (1 << m) - 1)
    nonzero_mant = st.integers(1, (1 << m) - 1)

    def compose(s: int, ex: int, mm: int) -> int:
        return (s << (bits - 1)) | (ex << m) | mm

    return st.one_of(
        st.builds(compose, sign, st.just(exp_max), nonzero_mant),  # NaN, any payload, quiet or signalling
        st.builds(compose, sign, st.just(exp_max), st.just(0)),  # ±inf
        st.builds(compose, sign, st.just(0), st.just(0)),  # ±0
        st.builds(compose, sign, st.just(0), nonzero_mant),  # subnormal
        st.builds(compose, sign, st.integers(max(1, bias - 12), bias), mant),  # weight-like, |x| < 2
        st.integers(0, (1 << bits) - 1),  # anything
    )


def elements(dtype: str) -> tuple[np.dtype, st.SearchStrategy]:
    """(dtype of the array to draw, element strategy) for a spec dtype; floats are drawn as bits."""
    if dtype in FLOAT_FORMATS:
        return np.dtype(f"u{FLOAT_FORMATS[dtype][0] // 8}"), float_bits(dtype)
    if dtype == "bool":
        return np.dtype(bool), st.booleans()
    return np.dtype(dtype), hnp.from_dtype(np.dtype(dtype))


def shapes(max_side: int = 6) -> st.SearchStrategy[tuple[int, ...]]:
    """0-d, empty, odd multi-dimensional, and longer 1-d shapes (long enough to be compressed)."""
    return st.one_of(
        hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=max_side),
        st.tuples(st.integers(0, 700)),
        st.tuples(st.integers(1, 40), st.integers(1, 40)),
    )


@st.composite
def base_arrays(draw, dtype: str | st.SearchStrategy[str] | None = None, shape=None) -> tuple[np.ndarray, str]:
    """A C-contiguous native array and its spec dtype (floats as their float dtype, bf16 as uint16)."""
    if dtype is None:
        dtype = st.sampled_from(DTYPES)
    if isinstance(dtype, st.SearchStrategy):
        dtype = draw(dtype)
    draw_dtype, elems = elements(dtype)
    arr = draw(hnp.arrays(draw_dtype, shape if shape is not None else shapes(), elements=elems))
    if dtype in ("float16", "float32", "float64"):
        arr = arr.view(np.dtype(dtype))
    return arr, dtype


LAYOUTS = ("c", "transpose", "strided", "reversed", "unaligned", "bigendian", "ml_dtypes")


def relayout(arr: np.ndarray, dtype: str, layout: str) -> np.ndarray:
    """A differently laid out array holding the same elements as ``arr`` (``transpose`` changes
    the logical array to ``arr.T``). Every transformation moves bytes, never converts values."""
    if layout == "transpose":
        return arr.T
    if layout == "strided":
        if arr.ndim == 0:
            return arr
        wide = np.repeat(arr, 2, axis=-1)  # elements at even positions are arr's
        return wide[..., ::2]
    if layout == "reversed":
        if arr.ndim == 0:
            return arr
        return c_order(arr[..., ::-1])[..., ::-1]
    if layout == "unaligned":
        buf = bytearray(arr.nbytes + 1)
        out = np.frombuffer(buf, dtype=arr.dtype, count=arr.size, offset=1).reshape(arr.shape)
        out[...] = arr
        return out
    if layout == "bigendian":
        if arr.dtype.itemsize == 1:
            return arr
        width = arr.dtype.itemsize
        swapped = c_order(arr).view(f"u{width}").byteswap()
        return swapped.view(arr.dtype.newbyteorder(">"))
    if layout == "ml_dtypes":
        if dtype == "bfloat16":
            return c_order(arr).view(ml_dtypes.bfloat16)
        return arr
    assert layout == "c", layout
    return arr


@st.composite
def tensors(draw, dtype=None, shape=None, layouts: tuple[str, ...] = LAYOUTS) -> Tensor:
    """Any tensor nnar must round-trip bit for bit, in any input layout.

    bfloat16 bit patterns may come big-endian too: the writer keeps their values.
    """
    arr, dt = draw(base_arrays(dtype, shape))
    layout = draw(st.sampled_from(layouts))
    return Tensor(relayout(arr, dt, layout), dt, layout)


def storage_arrays(dtype=None, shape=None) -> st.SearchStrategy[tuple[np.ndarray, str]]:
    """What codecs see: C-contiguous little-endian arrays in nnar's storage dtype."""
    return base_arrays(dtype, shape).map(lambda p: (c_order(p[0]).view(STORAGE[p[1]]), p[1]))


# -- names and metadata --------------------------------------------------------------------------

#: code points a tensor name must not contain (spec §5.2.1)
FORBIDDEN = [chr(c) for c in (*range(0x00, 0x20), *range(0x7F, 0xA0))] + ["\ud800", "\udfff", "\udc00"]

_name_chars = st.characters(exclude_categories=("Cs", "Cc"))


def names(max_size: int = 24) -> st.SearchStrategy[str]:
    """Valid tensor names: any unicode without control characters or surrogates, incl. non-BMP."""
    non_bmp = st.characters(min_codepoint=0x10000, exclude_categories=("Cs", "Cc", "Cn", "Co"))
    return st.one_of(
        st.text(_name_chars, min_size=1, max_size=max_size),
        st.builds(lambda a, b, c: a + b + c, st.text(_name_chars, max_size=8), non_bmp,
                  st.text(_name_chars, max_size=8)),
        st.sampled_from(["model.layers.0.self_attn.q_proj.weight", "w", ".", "..", "/etc/passwd", "a/b",
                         "\u2028", "日本語", "😀", "𝕨𝕖𝕚𝕘𝕙𝕥", " ", "\u00a0"]),
    )


@st.composite
def invalid_names(draw) -> object:
    """Names every writer must refuse: empty, or holding a control character or a surrogate."""
    kind = draw(st.sampled_from(["empty", "control"]))
    if kind == "empty":
        return ""
    return draw(names(8)) + draw(st.sampled_from(FORBIDDEN)) + draw(st.text(_name_chars, max_size=4))


def metadata() -> st.SearchStrategy[dict[str, str]]:
    text = st.text(st.characters(exclude_categories=("Cs",)), max_size=16)
    return st.dictionaries(text, text, max_size=5)


def tensor_dicts(max_size: int = 5, **kw) -> st.SearchStrategy[dict[str, Tensor]]:
    return st.dictionaries(names(), tensors(**kw), max_size=max_size)


# -- byte strings --------------------------------------------------------------------------------


def byte_strings(max_size: int = 4096) -> st.SearchStrategy[bytes]:
    """Random bytes, and runs of a few values (which compress) so both codec paths are exercised."""
    runs = st.lists(st.tuples(st.integers(0, 255), st.integers(1, 300)), max_size=12).map(
        lambda rs: b"".join(bytes([v]) * n for v, n in rs))
    return st.one_of(st.binary(max_size=max_size), runs)


def chunk_sizes() -> st.SearchStrategy[list[int]]:
    """Read sizes for a short-reading file: each read returns at most the next of these (cycled)."""
    return st.lists(st.one_of(st.integers(1, 7), st.integers(1, 100), st.integers(1, 5000)), min_size=1, max_size=20)
