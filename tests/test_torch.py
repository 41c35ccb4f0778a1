"""PyTorch in and out: real models (a CNN with BatchNorm, an MLP with tied embedding and output
weights, a transformer block) through torch.save → nnar pack → nnar unpack → torch.load
(weights_only) → load_state_dict(strict) give bit-identical outputs; every dtype bit for bit;
ties kept and stored once; checkpoints that need arbitrary unpickling are refused, never run."""

from __future__ import annotations

import collections
import io
import os
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import msgpack
import numpy as np
import pytest
from hypothesis import given, strategies as st

torch = pytest.importorskip("torch")
nn = torch.nn

import nnar  # noqa: E402
import nnar.torch  # noqa: E402
from nnar.cli import main  # noqa: E402
from nnar.formats import torch as T  # noqa: E402

import strategies as S  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

# -- models ----------------------------------------------------------------------------------------


from models import CNN, Block, TiedLM  # noqa: E402


def make(kind: str) -> nn.Module:
    torch.manual_seed({"cnn": 1, "tied": 2, "block": 3}[kind])
    model = {"cnn": CNN, "tied": TiedLM, "block": Block}[kind]()
    if kind == "cnn":  # running statistics and num_batches_tracked that are not the initial ones
        model.train()
        with torch.no_grad():
            for _ in range(3):
                model(torch.randn(4, 3, 8, 8))
    return model.eval()


def example_input(kind: str):
    g = torch.Generator().manual_seed(99)
    if kind == "cnn":
        return torch.randn(2, 3, 8, 8, generator=g)
    if kind == "tied":
        return torch.randint(0, 640, (2, 7), generator=g)
    return torch.randn(2, 5, 32, generator=g)


def output(model: nn.Module, kind: str):
    with torch.no_grad():
        return model(example_input(kind))


def bits(t) -> bytes:
    t = t.detach().contiguous()
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    return t.numpy().tobytes()


def assert_same_state_dict(found, expected) -> None:
    assert list(found) == list(expected)
    for k in expected:
        assert found[k].dtype == expected[k].dtype, k
        assert found[k].shape == expected[k].shape, k
        assert bits(found[k]) == bits(expected[k]), k


def shared(a, b) -> bool:
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr() and a.data_ptr() == b.data_ptr()


# -- through the adapter alone (what an archive does in between is simulated) ------------------------


def through_adapter(obj, *, copy: bool = True):
    """torch.save(obj) → formats.torch.read → (arrays, as an archive gives them back: an alias as
    its target's very array) → formats.torch.write → torch.load(weights_only=True)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    model = T.read(buf)
    arrays = {n: (np.array(a, copy=True) if copy else a, dt) for n, a, dt in model.tensors()}
    assert model.count == len(arrays)
    assert not set(arrays) & set(model.aliases)

    def tensors():
        for n, (a, dt) in arrays.items():
            yield n, a, dt
            for alias, target in model.aliases.items():
                if target == n:
                    yield alias, a, dt

    out = io.BytesIO()
    T.write(out, tensors(), {}, structure=model.structure)
    out.seek(0)
    return model, torch.load(out, weights_only=True)


@pytest.mark.parametrize("kind", ["cnn", "tied", "block"])
def test_models_round_trip_through_the_adapter(kind):
    model = make(kind)
    sd = model.state_dict()
    read, back = through_adapter(sd)
    assert_same_state_dict(back, sd)
    assert back._metadata == sd._metadata
    fresh = {"cnn": CNN, "tied": TiedLM, "block": Block}[kind]().eval()
    fresh.load_state_dict(back, strict=True)
    assert torch.equal(output(fresh, kind), output(model, kind))
    structure = msgpack.unpackb(read.structure)
    assert structure["keys"] == list(sd)
    if kind == "tied":
        assert read.aliases == {"lm_head.weight": "emb.weight"}
        assert shared(back["lm_head.weight"], back["emb.weight"])
    else:
        assert read.aliases == {}


def test_structure_keeps_the_key_order_and_versions():
    model = make("cnn")
    sd = model.state_dict()
    assert sd._metadata["features.1"] == {"version": 2}  # BatchNorm's version, which load_state_dict reads
    st_ = msgpack.unpackb(T.read(_saved(sd)).structure)
    assert st_ == {"keys": list(sd), "versions": {k: dict(v) for k, v in sd._metadata.items()}}
    # in a different order, the structure puts it back; names it does not list follow in arrival order
    arrays = {n: (a, dt) for n, a, dt in T.read(_saved(sd)).tensors()}
    extra = ("zz.extra", np.ones(2, np.float32), "float32")
    out = T.build_state_dict([extra] + [(n, *arrays[n]) for n in reversed(list(arrays))],
                             msgpack.packb({"keys": list(sd)}))
    assert list(out) == list(sd) + ["zz.extra"]
    assert not hasattr(out, "_metadata")


def _saved(obj) -> io.BytesIO:
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return buf


def _tensor_of(arr: np.ndarray, dt: str):
    arr = np.array(arr, copy=True)
    if dt == "bfloat16":
        return torch.from_numpy(arr.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(arr)


@st.composite
def state_dicts(draw):
    """Random small state dicts: any dtype and shape, some entries non-contiguous views, some
    keys tied to an earlier key's very tensor."""
    n = draw(st.integers(0, 6))
    names = draw(st.lists(S.names(12), min_size=n, max_size=n, unique=True))
    sd = collections.OrderedDict()
    for name in names:
        if sd and draw(st.integers(0, 3)) == 0:
            sd[name] = sd[draw(st.sampled_from(list(sd)))]  # tied
            continue
        arr, dt = draw(S.storage_arrays())
        t = _tensor_of(arr, dt)
        if t.dim() >= 2 and draw(st.booleans()):
            t = t.transpose(0, 1)  # a non-contiguous view
        sd[name] = t
    return sd


@given(state_dicts(), st.booleans())
def test_random_state_dicts_round_trip_exactly(sd, copy):
    read, back = through_adapter(sd, copy=copy)
    assert_same_state_dict(back, sd)
    for alias, target in read.aliases.items():
        assert sd[alias] is sd[target]
        assert shared(back[alias], back[target])
    tied = [(a, b) for i, a in enumerate(sd) for b in list(sd)[:i] if sd[a] is sd[b] and sd[a].numel()]
    for a, b in tied:  # every tie of a non-empty tensor is kept
        assert shared(back[a], back[b])


# -- dtypes, layouts -----------------------------------------------------------------------------------


FLOAT_PATTERNS = {  # NaN payloads of both signs, ±0, ±inf, subnormals, ordinary values
    "float16": [0x7C01, 0xFE00, 0x7E5A, 0x8000, 0x0000, 0x7C00, 0xFC00, 0x0001, 0x83FF, 0x3C00, 0xB555],
    "bfloat16": [0x7F81, 0xFFC0, 0x7FD5, 0x8000, 0x0000, 0x7F80, 0xFF80, 0x0001, 0x807F, 0x3F80, 0xC049],
    "float32": [0x7F800001, 0xFFC00000, 0x7FA5A5A5, 0x80000000, 0, 0x7F800000, 0xFF800000, 1, 0x807FFFFF,
                0x3F800000, 0xC0490FDB],
    "float64": [0x7FF0000000000001, 0xFFF8000000000000, 0x7FF5A5A5A5A5A5A5, 1 << 63, 0, 0x7FF0000000000000,
                0xFFF0000000000000, 1, 0x800FFFFFFFFFFFFF, 0x3FF0000000000000, 0xC00921FB54442D18],
}


def every_dtype():
    out = collections.OrderedDict()
    for dt, patterns in FLOAT_PATTERNS.items():
        width = 2 if dt in ("float16", "bfloat16") else int(dt[5:]) // 8
        arr = np.array(patterns, dtype=f"u{width}")
        out[dt] = _tensor_of(arr if dt == "bfloat16" else arr.view(dt), dt).reshape(1, -1)
    for dt in ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"):
        info = np.iinfo(dt)
        out[dt] = torch.from_numpy(np.array([info.min, info.max, 0, 1, info.max // 3], dt))
    out["bool"] = torch.tensor([[True, False], [False, True]])
    out["scalar"] = torch.tensor(2.5, dtype=torch.float64)
    out["empty"] = torch.zeros(0, 3, dtype=torch.bfloat16)
    return out


def test_every_dtype_bit_exact_through_the_adapter():
    sd = every_dtype()
    _, back = through_adapter(sd)
    assert_same_state_dict(back, sd)


def test_views_and_non_contiguous_tensors_keep_their_values():
    x = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    base = torch.arange(10, dtype=torch.int32)
    sd = {"x.t": x.t(), "x.every_other": x[:, ::2], "x.row": x[1], "base": base, "base.head": base[:4],
          "base.flip": base.flip(0), "expanded": torch.ones(3).expand(4, 3)}
    read, back = through_adapter(sd)
    assert read.aliases == {}  # overlapping views are not the same view: stored apart
    for k, t in sd.items():
        assert torch.equal(back[k], t) and back[k].is_contiguous(), k


def test_only_the_same_view_is_an_alias():
    w = torch.randn(4, 4)
    sd = {"a": w, "b": w.view(4, 4), "c": w.view(16), "d": w[:2], "e": torch.randn(0), "f": torch.randn(0)}
    model = T.model_from_state_dict(sd)
    assert model.aliases == {"b": "a"}  # a fresh view object of the same storage, offset, shape and strides
    assert model.count == 5
    assert [n for n, _, _ in model.tensors()] == ["a", "c", "d", "e", "f"]


# -- refused inputs ------------------------------------------------------------------------------------


def _payload(path: str) -> None:  # what unpickling a Trap runs
    Path(path).write_text("the checkpoint's code ran")


class Trap:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return _payload, (self.path,)


def test_a_checkpoint_with_a_custom_class_is_refused_and_never_run(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # torch obeys it only when weights_only is unset
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(Trap(probe)))  # plain unpickling runs the payload: the trap is live
    assert probe.exists()
    marker = tmp_path / "marker"
    src = tmp_path / "model.pt"
    torch.save({"w": torch.ones(3), "hook": Trap(marker)}, src)
    with pytest.raises(nnar.InvalidInput, match="arbitrary unpickling, which can run code") as e:
        nnar.pack(src, tmp_path / "a.nnar")
    assert "state_dict()" in str(e.value) and "_payload" in str(e.value)  # the callable it would have run
    assert main(["pack", str(src), "-o", str(tmp_path / "b.nnar")]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("nnar: error[invalid-input]:") and "arbitrary unpickling" in err[0]
    assert not marker.exists()
    assert not (tmp_path / "a.nnar").exists() and not (tmp_path / "b.nnar").exists()


def test_a_whole_module_is_refused():
    with pytest.raises(nnar.InvalidInput, match=r"arbitrary unpickling.*Linear.*model\.state_dict\(\)"):
        T.read(_saved(nn.Linear(2, 2)))


@pytest.mark.parametrize("data", [b"", b"garbage" * 10, b"PK\x03\x04" + bytes(40), pickle.dumps({"a": 1}, protocol=2)])
def test_garbage_is_invalid_input(data):
    with pytest.raises(nnar.InvalidInput, match="expected a PyTorch checkpoint"):
        T.read(io.BytesIO(data))


@pytest.mark.parametrize("cut", [0.1, 0.5, 0.9, 0.99])
def test_a_truncated_checkpoint_is_invalid_input(cut):
    data = _saved({"w": torch.randn(64, 64), "b": torch.randn(64)}).getvalue()
    with pytest.raises(nnar.InvalidInput, match="expected a PyTorch checkpoint"):
        T.read(io.BytesIO(data[:int(len(data) * cut)]))


@pytest.mark.parametrize("obj, error, match", [
    (torch.ones(3), nnar.InvalidInput, "found a Tensor"),
    ([torch.ones(3)], nnar.InvalidInput, "found a list"),
    ({"epoch": 3}, nnar.InvalidInput, "found a dict without tensors"),
    ({"w": torch.ones(2), "step": 5}, nnar.InvalidInput, "entry 'step': expected a tensor, found int"),
    ({"w": torch.ones(2), 3: torch.ones(1)}, nnar.InvalidInput, "key 3: expected a string"),
    ({"w": torch.ones(2, dtype=torch.complex64)}, nnar.UnsupportedDtype, "'w': torch dtype torch.complex64"),
    ({"w": torch.ones(2).to(torch.float8_e4m3fnuz)}, nnar.UnsupportedDtype, "'w': torch dtype torch.float8_e4m3fnuz"),
    ({"w": torch.ones(2).to_sparse()}, nnar.InvalidInput, "'w': expected a dense tensor"),
    ({"g": {"a": torch.ones(1)}, "d": {"b": torch.ones(1)}}, nnar.InvalidInput, "one state dict.*found 2"),
])
def test_what_is_not_a_state_dict_of_supported_tensors_is_refused(obj, error, match):
    with pytest.raises(error, match=match):
        T.read(_saved(obj))


def test_quantized_and_meta_tensors_are_refused():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # quantize_per_tensor is deprecated
        q = torch.quantize_per_tensor(torch.ones(3), 0.1, 0, torch.qint8)
    with pytest.raises(nnar.UnsupportedDtype, match="'q': torch dtype torch.qint8.*dequantize"):
        T.model_from_state_dict({"q": q})
    with pytest.raises(nnar.InvalidInput, match="'m': a tensor on the meta device"):
        T.model_from_state_dict({"m": torch.empty(3, device="meta")})


def test_odd_module_versions_are_left_out_with_a_warning():
    sd = collections.OrderedDict(w=torch.ones(1))
    sd._metadata = {"": {"version": 1.5}}
    with pytest.warns(UserWarning, match="_metadata.*left out"):
        structure = T.model_from_state_dict(sd).structure
    assert msgpack.unpackb(structure) == {"keys": ["w"]}


def test_a_key_that_is_not_unicode_text_is_refused():
    with pytest.raises(nnar.InvalidInput, match="valid Unicode"):
        T.model_from_state_dict({"a\ud800": torch.ones(1)})


def test_parameters_are_read_like_tensors():
    lin = nn.Linear(3, 2)
    _, back = through_adapter(dict(lin.named_parameters()))
    assert_same_state_dict(back, lin.state_dict())


def test_torch_missing_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)
    for call in (lambda: T.read(io.BytesIO(b"x")), lambda: nnar.torch.load(b"x")):
        with pytest.raises(nnar.MissingExtra, match=r"torch==2\.13\.0.*CUDA"):
            call()


def test_import_nnar_does_not_import_torch():
    code = ("import sys, numpy, nnar, nnar.formats.torch, nnar.torch; nnar.unpack(nnar.pack({'w': numpy.ones(3)})); "
            "sys.exit('torch' in sys.modules)")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    assert subprocess.run([sys.executable, "-c", code], env=env, timeout=60).returncode == 0


# -- structure from an archive is hostile bytes --------------------------------------------------------


@pytest.mark.parametrize("structure", [
    b"", b"\xc1", b"\x82", msgpack.packb({"keys": ["a"]}) + b"\x00", msgpack.packb(["a"]), msgpack.packb({}),
    msgpack.packb({"keys": "a"}), msgpack.packb({"keys": [1]}), msgpack.packb({"keys": [b"a"]}),
    msgpack.packb({"keys": ["a", "a"]}), msgpack.packb({"keys": ["a"], "more": 1}),
    msgpack.packb({"keys": ["a"], "versions": []}), msgpack.packb({"keys": ["a"], "versions": {"": 1}}),
    msgpack.packb({"keys": ["a"], "versions": {"": {"version": [1]}}}),
    msgpack.packb({"keys": ["a"], "versions": {"": {"version": 1.5}}}), msgpack.packb({1: 2}, strict_types=False),
    "not bytes",
])
def test_a_malformed_structure_is_a_bad_descriptor(structure):
    with pytest.raises(nnar.BadDescriptor, match="torch structure: expected"):
        T.build_state_dict([("a", np.ones(2, np.float32), "float32")], structure)


def test_a_structure_naming_tensors_that_never_came_is_invalid_input():
    with pytest.raises(nnar.InvalidInput, match="1 key.*'missing'"):
        T.build_state_dict([("a", np.ones(2, np.float32), "float32")], msgpack.packb({"keys": ["a", "missing"]}))


@given(st.binary(max_size=64))
def test_any_structure_bytes_give_a_state_dict_or_an_nnar_error(data):
    try:
        T.build_state_dict([("a", np.ones(2, np.float32), "float32")], data)
    except nnar.NnarError:
        pass


def test_write_refuses_mismatched_arrays():
    with pytest.raises(nnar.InvalidInput, match="'a': expected a float32 array"):
        T.build_state_dict([("a", np.ones(2, np.float64), "float32")])
    arr = np.ones(2, np.float32)
    with pytest.raises(nnar.InvalidInput, match="expected unique names"):
        T.build_state_dict([("a", arr, "float32"), ("a", arr, "float32")])


# -- pipes ---------------------------------------------------------------------------------------------


class OneWay(io.RawIOBase):
    """A pipe end: no seek, no tell."""

    def __init__(self, data: bytes = b""):
        self.src, self.out = io.BytesIO(data), bytearray()

    def readable(self):
        return True

    def writable(self):
        return True

    def seekable(self):
        return False

    def readinto(self, b):
        return self.src.readinto(b)

    def write(self, b):
        self.out += b
        return len(b)


def test_read_from_and_write_to_a_pipe():
    sd = make("tied").state_dict()
    model = T.read(OneWay(_saved(sd).getvalue()))
    arrays = {n: (a, dt) for n, a, dt in model.tensors()}
    sink = OneWay()
    T.write(sink, ((n, *arrays[model.aliases.get(n, n)]) for n in sd), {}, structure=model.structure)
    back = torch.load(io.BytesIO(bytes(sink.out)), weights_only=True)
    assert_same_state_dict(back, sd)
    assert shared(back["lm_head.weight"], back["emb.weight"])


def test_metadata_is_left_out_with_a_warning():
    with pytest.warns(UserWarning, match="no place for metadata"):
        T.write(io.BytesIO(), [("a", np.ones(2, np.float32), "float32")], {"k": "v"})


# -- end to end: nnar.pack / nnar.unpack / the command line ---------------------------------------------


def pack_unpack(tmp_path, obj, name="m", **pack_kwargs):
    src, arc, out = tmp_path / f"{name}.pt", tmp_path / f"{name}.nnar", tmp_path / f"{name}.out.pt"
    torch.save(obj, src)
    infos = nnar.pack(src, arc, **pack_kwargs)
    nnar.unpack(arc, out)
    return infos, arc, torch.load(out, weights_only=True)


@pytest.mark.parametrize("kind", ["cnn", "tied", "block"])
def test_models_round_trip_through_pack_and_unpack(tmp_path, kind):
    model = make(kind)
    sd = model.state_dict()
    _, arc, back = pack_unpack(tmp_path, sd)
    assert_same_state_dict(back, sd)
    assert back._metadata == sd._metadata
    fresh = {"cnn": CNN, "tied": TiedLM, "block": Block}[kind]().eval()
    fresh.load_state_dict(back, strict=True)
    assert torch.equal(output(fresh, kind), output(model, kind))
    with nnar.open(arc) as a:
        assert a.source_format == "torch"
        assert sorted(a.names()) == sorted(sd)  # an alias is listed after its target's record
    assert_same_state_dict(nnar.torch.load(arc), sd)


def test_tied_weights_are_stored_once_and_shared_after_unpacking(tmp_path, capsys):
    sd = make("tied").state_dict()
    _, arc, back = pack_unpack(tmp_path, sd)
    assert shared(back["lm_head.weight"], back["emb.weight"])
    loaded = nnar.torch.load(arc)
    assert shared(loaded["lm_head.weight"], loaded["emb.weight"])
    with nnar.open(arc) as a:
        infos = {i.name: i for i in a.infos()}
        assert a.aliases() == {"lm_head.weight": "emb.weight"}
    assert infos["lm_head.weight"].alias_of == "emb.weight" and infos["lm_head.weight"].stored_bytes == 0
    untied = collections.OrderedDict((k, v.clone()) for k, v in sd.items())
    _, arc2, back2 = pack_unpack(tmp_path, untied, name="untied")
    assert not shared(back2["lm_head.weight"], back2["emb.weight"])
    emb_bytes = sd["emb.weight"].numel() * 4
    assert arc.stat().st_size < arc2.stat().st_size - emb_bytes // 2  # the tied copy costs nothing
    assert main(["ls", str(arc)]) == 0
    listing = capsys.readouterr().out
    assert "= emb.weight" in listing


def test_every_dtype_bit_exact_through_pack_and_unpack(tmp_path):
    sd = every_dtype()
    infos, arc, back = pack_unpack(tmp_path, sd)
    assert_same_state_dict(back, sd)
    assert {i.name: i.dtype for i in infos} == {k: {"scalar": "float64", "empty": "bfloat16"}.get(k, k) for k in sd}
    assert_same_state_dict(nnar.torch.load(arc, verify=True), sd)


def test_a_nested_checkpoint_packs_its_state_dict_with_a_warning(tmp_path):
    sd = make("cnn").state_dict()
    optimizer = {"state": {i: {"momentum_buffer": torch.randn(v.shape)} for i, v in enumerate(sd.values())},
                 "param_groups": [{"lr": 0.1, "momentum": 0.9, "params": list(range(len(sd)))}]}  # SGD's form
    with pytest.warns(UserWarning, match="under 'state_dict'; left out 'epoch', 'optimizer'"):
        _, _, back = pack_unpack(tmp_path, {"epoch": 3, "state_dict": sd, "optimizer": optimizer})
    assert_same_state_dict(back, sd)
    with pytest.warns(UserWarning, match="under 'weights'; left out 'epoch'"):  # found as the only one
        _, _, back = pack_unpack(tmp_path, {"epoch": 3, "weights": sd}, name="other")
    assert_same_state_dict(back, sd)


def test_nnar_torch_save_and_load(tmp_path):
    model = make("tied")
    sd = model.state_dict()
    nnar.torch.save(sd, tmp_path / "m.nnar")
    back = nnar.torch.load(tmp_path / "m.nnar")
    assert isinstance(back, collections.OrderedDict)
    assert_same_state_dict(back, sd)
    assert back._metadata == sd._metadata
    assert shared(back["lm_head.weight"], back["emb.weight"])
    assert_same_state_dict(nnar.torch.load(nnar.torch.save(sd)), sd)  # bytes both ways


def test_nnar_torch_load_of_an_archive_from_another_format():
    bf16 = np.array([0x3F80, 0xFFC1, 0x8000], np.uint16)
    with nnar.ArchiveWriter(buf := io.BytesIO()) as w:
        w.write("b", bf16, dtype="bfloat16")
        w.write("i", np.arange(5, dtype=np.int16))
    back = nnar.torch.load(buf.getvalue())
    assert list(back) == ["b", "i"] and back["b"].dtype == torch.bfloat16
    assert back["b"].view(torch.int16).numpy().view(np.uint16).tolist() == bf16.tolist()
    assert torch.equal(back["i"], torch.arange(5, dtype=torch.int16))


def test_command_line_pack_unpack(tmp_path, capsys):
    model = make("block")
    src, arc, out = tmp_path / "model.pt", tmp_path / "m.nnar", tmp_path / "out.pth"
    torch.save(model.state_dict(), src)
    assert main(["pack", str(src), "-o", str(arc), "-q"]) == 0
    assert main(["unpack", str(arc), "-o", str(out), "-q"]) == 0
    assert main(["verify", str(arc)]) == 0
    capsys.readouterr()
    assert_same_state_dict(torch.load(out, weights_only=True), model.state_dict())


def test_command_line_through_pipes(tmp_path):
    sd = make("tied").state_dict()
    src = tmp_path / "model.pt"
    torch.save(sd, src)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = (f"{sys.executable} -m nnar pack - --from torch -o - < {src} | "
           f"{sys.executable} -m nnar unpack - --to torch -o - > {tmp_path / 'out.pt'}")
    done = subprocess.run(cmd, shell=True, env=env, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr
    back = torch.load(tmp_path / "out.pt", weights_only=True)
    assert_same_state_dict(back, sd)
    assert shared(back["lm_head.weight"], back["emb.weight"])


# balanced promises SQNR >= 31 dB per tensor; int8 makes no promise, and 30 dB is far below what 8
# bits per output channel give any weight-like tensor (about 46-49 dB here)
@pytest.mark.parametrize("preset, min_db", [("int8", 30.0), ("balanced", 31.0)])
@pytest.mark.parametrize("kind", ["cnn", "tied", "block"])
def test_lossy_presets_load_strictly_and_stay_close(tmp_path, kind, preset, min_db):
    model = make(kind)
    sd = model.state_dict()
    infos, arc, back = pack_unpack(tmp_path, sd, config=preset)
    lossy = [i for i in infos if i.fidelity]
    assert lossy, "no tensor was eligible for the lossy settings"
    for i in lossy:
        assert i.fidelity["sqnr_db"] >= min_db, (i.name, i.fidelity)
    assert [k for k in back] == list(sd) and all(back[k].dtype == sd[k].dtype for k in sd)
    fresh = {"cnn": CNN, "tied": TiedLM, "block": Block}[kind]().eval()
    fresh.load_state_dict(back, strict=True)
    # To first order, each weight's relative error reaches the output undamped (the errors are
    # noise-like, and the norms in these models do not amplify them): the output's relative error
    # stays under the sum of the reported ones, a tied weight counted once per use (its alias has
    # an info of its own). Measured: 0.1 to 0.5 of the bound.
    bound = sum(i.fidelity["rel_l2"] for i in lossy)
    want, got = output(model, kind), output(fresh, kind)
    assert float((got - want).norm() / want.norm()) < bound
    if kind == "tied":
        assert shared(back["lm_head.weight"], back["emb.weight"])
