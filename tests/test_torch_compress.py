"""Trained compression in nnar.torch: masks held through real optimizers, centroids trained by
their members' summed gradients, budgets from a sensitivity scan, and archives that give back
exactly the tensors trained (biases and buffers included), through real torch models."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

import nnar  # noqa: E402
import nnar.torch as nt  # noqa: E402
from nnar import dtypes, pipeline as P  # noqa: E402
from nnar.codecs.abc import TensorSpec  # noqa: E402
from nnar.limits import DEFAULT_LIMITS  # noqa: E402
from nnar.torch.pack import exact_candidates  # noqa: E402

from models import CNN  # noqa: E402

OPTIMIZERS = {
    "sgd-momentum": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3),
    "adam-wd": lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=1e-2),
    "adamw": lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.1),
    "rmsprop": lambda p: torch.optim.RMSprop(p, lr=1e-3, momentum=0.5),
    "adagrad": lambda p: torch.optim.Adagrad(p, lr=1e-2),
}


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(16, 40), nn.ReLU(), nn.Linear(40, 20), nn.ReLU(), nn.Linear(20, 4))


def batches(n: int = 6, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(32, 16, generator=g), torch.randint(0, 4, (32,), generator=g)) for _ in range(n)]


def train(model, opt, data) -> None:
    for x, y in data:
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()


def zeros_of(p) -> torch.Tensor:
    return p.detach() == 0


# -- pruning ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_masks_hold_through_optimizer_steps(name):
    model = mlp()
    opt = OPTIMIZERS[name](model.parameters())
    train(model, opt, batches(3))  # momenta and second moments exist before pruning
    comp = nt.Compression(model, opt)
    comp.prune(0.6)
    masks = {n: m.clone() for n, m in comp.masks.items()}
    for x, y in batches(8, seed=5):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        for n, p in comp.params.items():  # the gradient of a pruned weight is zero ...
            assert torch.all(p.grad[masks[n] == 0] == 0), n
        opt.step()
        for n, p in comp.params.items():  # ... and so is the weight after every step
            assert torch.all(p.detach()[masks[n] == 0] == 0), n
    for n, p in comp.params.items():
        assert int((p.detach() == 0).sum()) == round(0.6 * p.numel()), n
        assert torch.any(p.detach()[masks[n] == 1] != 0), n  # survivors did train


def test_iterative_pruning_never_revives_and_reaches_each_amount():
    model = mlp()
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    comp = nt.Compression(model, opt)
    before = None
    for amounts in nt.schedule({n: 0.9 for n in comp.params}, 3):
        got = comp.prune(amounts)
        now = {n: zeros_of(p) for n, p in comp.params.items()}
        if before is not None:
            for n in now:
                assert torch.all(now[n][before[n]]), n  # pruned stays pruned
        for n, p in comp.params.items():
            assert int(now[n].sum()) == round(amounts[n] * p.numel())
            assert got[n] == pytest.approx(amounts[n], abs=1 / p.numel())
        train(model, opt, batches(3))
        before = now
    assert all(v == pytest.approx(0.9, abs=0.01) for v in comp.sparsity().values())


def test_global_pruning_uses_one_threshold():
    model = mlp()
    comp = nt.Compression(model)
    mags = {n: p.detach().abs().clone() for n, p in comp.params.items()}
    comp.prune(0.75, scope="global")
    kept = [mags[n][p.detach() != 0] for n, p in comp.params.items()]
    cut = [mags[n][p.detach() == 0] for n, p in comp.params.items()]
    assert float(torch.cat(cut).max()) <= float(torch.cat(kept).min())
    total = sum(p.numel() for p in comp.params.values())
    zeros = sum(int((p.detach() == 0).sum()) for p in comp.params.values())
    assert zeros == pytest.approx(0.75 * total, abs=2)
    per_layer = comp.sparsity()
    assert max(per_layer.values()) - min(per_layer.values()) > 0.01  # layers differ: one threshold, not one ratio


def test_per_layer_budget_by_name_and_glob():
    model = mlp()
    comp = nt.Compression(model)
    got = comp.prune({"0.weight": 0.9, "[24].weight": 0.5})
    assert got["0.weight"] == pytest.approx(0.9, abs=1e-3)
    assert got["2.weight"] == got["4.weight"] == pytest.approx(0.5, abs=0.01)


@pytest.mark.parametrize("call, message", [
    (lambda c: c.prune(1.0), "expected a fraction in [0, 1)"),
    (lambda c: c.prune({"nope.*": 0.5}), "matches no compressed weight"),
    (lambda c: c.prune(0.5, scope="model"), "scope: expected one of layer, global"),
    (lambda c: c.prune({"0.weight": 0.5}, scope="global"), "takes one fraction"),
    (lambda c: c.share(bits=9), "bits: expected an integer in [1, 8]"),
    (lambda c: c.share(bits=4, init="random"), "init: expected one of"),
    (lambda c: c.codebook("0.weight"), "is not shared"),
])
def test_bad_arguments_are_clear_errors(call, message):
    comp = nt.Compression(mlp())
    with pytest.raises(nnar.errors.InvalidInput, match=re.escape(message)):
        call(comp)


def test_prune_after_share_is_refused():
    comp = nt.Compression(mlp())
    comp.share(bits=3)
    with pytest.raises(nnar.errors.InvalidInput, match="prune before share"):
        comp.prune(0.5)


def test_nothing_to_compress_is_refused():
    with pytest.raises(nnar.errors.InvalidInput, match="no parameter to compress"):
        nt.Compression(nn.Sequential(nn.LayerNorm(4)))
    with pytest.raises(nnar.errors.InvalidInput, match="expected a torch.nn.Module"):
        nt.Compression({"w": torch.zeros(2, 2)})


# -- weight sharing ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
@pytest.mark.parametrize("pruned", [False, True])
def test_centroid_training_keeps_every_weight_in_its_codebook(name, pruned):
    model = mlp()
    opt = OPTIMIZERS[name](model.parameters())
    comp = nt.Compression(model, opt)
    if pruned:
        comp.prune(0.7)
        train(model, opt, batches(2))
    zeros = {n: zeros_of(p) for n, p in comp.params.items()}
    comp.share(bits=3)
    idx = {n: c.clone() for n, c in comp.clusters.items()}
    first = {n: comp.codebook(n) for n in comp.params}
    train(model, opt, batches(8, seed=7))
    for n, p in comp.params.items():
        flat = p.detach().reshape(-1)
        book = torch.from_numpy(comp.codebook(n))
        live = idx[n] >= 0
        assert torch.equal(flat[live], book[idx[n][live]]), n  # every weight is its centroid, exactly
        assert torch.all(flat[~live] == 0), n
        if pruned:
            assert torch.equal(~live.reshape(p.shape), zeros[n]), n  # only survivors are clustered
        assert len(torch.unique(flat[live])) <= 8, n
        assert not np.array_equal(comp.codebook(n), first[n]), n  # the centroids did train


@pytest.mark.parametrize("reduce", ["sum", "mean"])
def test_a_centroid_moves_by_its_members_gradient(reduce):
    """Plain SGD: centroid_new = centroid − lr · (sum or mean of its members' gradients)."""
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    comp = nt.Compression(model, opt)
    comp.prune(0.5)
    comp.share(bits=2, reduce=reduce)
    x, y = batches(1)[0]
    # the members' own gradients, with the weights as they are (a copy with no hooks)
    twin = mlp()
    twin.load_state_dict(model.state_dict())
    F.cross_entropy(twin(x), y).backward()
    expected = {}
    for n, p in comp.params.items():
        g = dict(twin.named_parameters())[n].grad.reshape(-1).double()
        idx = comp.clusters[n]
        book = torch.from_numpy(comp.codebook(n)).double()
        for k in range(4):
            members = idx == k
            if members.any():
                step = g[members].sum() if reduce == "sum" else g[members].mean()
                expected[(n, k)] = float(book[k] - 0.1 * step)
    train(model, opt, [(x, y)])
    for (n, k), value in expected.items():
        assert comp.codebook(n)[k] == pytest.approx(value, rel=1e-5, abs=1e-7), (n, k)


def test_linear_init_is_the_papers_and_available():
    model = mlp()
    comp = nt.Compression(model)
    w = comp.params["2.weight"].detach().clone()
    comp.share(bits=2, init="linear")
    book = comp.codebook("2.weight")
    assert book.size == 4 and float(w.min()) <= book.min() < book.max() <= float(w.max())


# -- the archive -----------------------------------------------------------------------------------

def bits_of(t) -> bytes:
    return t.detach().contiguous().numpy().tobytes()


def compressed_cnn():
    torch.manual_seed(3)
    model = CNN()
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    comp = nt.Compression(model, opt)
    data = [(torch.randn(8, 3, 8, 8), torch.randint(0, 10, (8,))) for _ in range(4)]

    def steps():
        model.train()
        for x, y in data:
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
        model.eval()
    comp.prune({"features.*": 0.5, "fc.weight": 0.9})
    steps()
    comp.share({n: (5 if i % 2 else 3) for i, n in enumerate(comp.params)})
    steps()
    return model, comp


def test_pack_gives_back_exactly_what_was_trained(tmp_path):
    model, comp = compressed_cnn()
    state = model.state_dict()
    path = tmp_path / "cnn.nnar"
    nt.pack(model, path)
    back = nt.load(path)
    assert list(back) == list(state)
    for k, v in state.items():  # weights, biases, BatchNorm statistics, num_batches_tracked: bit for bit
        assert back[k].dtype == v.dtype and bits_of(back[k]) == bits_of(v), k
    archive = nnar.open(path)
    for n in comp.params:
        info = archive.info(n)
        assert "codebook" in info.describe_pipeline(), (n, info.describe_pipeline())  # stored as shared
        assert info.stored_bytes < info.nbytes / 3, n
        assert not info.lossy  # stored exactly: the digest is of the trained tensor itself
    assert nnar.verify(path)
    fresh = type(model)()
    fresh.load_state_dict(back, strict=True)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(fresh.eval()(x), model(x))


def test_pack_to_bytes_and_refuses_to_overwrite(tmp_path):
    model, _ = compressed_cnn()
    data = nt.pack(model)
    assert isinstance(data, bytes) and nnar.verify(data)
    path = tmp_path / "m.nnar"
    path.write_bytes(b"keep me")
    with pytest.raises(nnar.errors.OutputExists):
        nt.pack(model, path)
    assert path.read_bytes() == b"keep me"
    nt.pack(model, path, force=True)
    assert path.read_bytes() == data


def test_pruned_but_unshared_weights_are_stored_sparse_and_exact():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 300))  # 960 survivors: too many values for a codebook
    comp = nt.Compression(model)
    comp.prune(0.95)
    data = nt.pack(model)
    back = nt.load(data)
    for k, v in model.state_dict().items():
        assert bits_of(back[k]) == bits_of(v), k
    assert "nnar.sparse" in nnar.open(data).info("0.weight").describe_pipeline()


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 400), st.floats(0, 1), st.integers(1, 300), st.sampled_from(["float32", "float16"]),
       st.integers(0, 2 ** 32 - 1))
def test_every_exact_layout_round_trips_bit_for_bit(n, density, distinct, dtype, seed):
    """Any tensor with zeros and/or few distinct values (-0.0 and NaN included): every candidate
    layout of nnar.torch.pack decodes to exactly its bits."""
    rng = np.random.default_rng(seed)
    table = rng.standard_normal(distinct).astype(dtype)
    table[rng.random(distinct) < 0.05] = -0.0
    if dtype == "float32" and distinct > 2:
        table[0] = np.nan
    x = table[rng.integers(0, distinct, n)]
    x[rng.random(n) > density] = 0
    spec = TensorSpec(dtype, x.shape)
    cands = exact_candidates(x, spec, 3)
    if cands is None:  # only a tensor with many distinct values and few zeros gets none
        patterns = dtypes.bit_patterns(x)
        assert np.unique(patterns).size > 256 and np.count_nonzero(patterns) > 0.75 * n
        return
    for pipe in cands:
        enc = P.encode(x, spec, pipe)
        out = P.decode_encoded(enc, DEFAULT_LIMITS, "test")
        assert out.tobytes() == x.tobytes(), pipe.describe()


# -- budgets ----------------------------------------------------------------------------------------

def scored_mlp():
    model = mlp()
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    data = batches(8)
    for _ in range(5):
        train(model, opt, data)
    x = torch.cat([b[0] for b in data])
    y = torch.cat([b[1] for b in data])

    def score(m) -> float:
        with torch.no_grad():
            return -float(F.cross_entropy(m(x), y))
    return model, score


def test_sensitivity_scan_leaves_the_model_as_it_was():
    model, score = scored_mlp()
    before = {k: bits_of(v) for k, v in model.state_dict().items()}
    scan = nt.sensitivity(model, score, sparsities=(0.5, 0.9), bits=(6, 2))
    assert {k: bits_of(v) for k, v in model.state_dict().items()} == before
    assert scan.evaluations == 1 + 3 * (2 + 2 + 2 * 2)
    for n, by in scan.scores.items():
        assert by[(0.9, None)] <= by[(0.5, None)] + 1e-9, n  # pruning more costs more here
        assert scan.sizes[n][(0.9, 2)] < scan.sizes[n][(0.5, 6)] < scan.sizes[n][(0.0, None)], n
    assert "2-bit" in scan.table() and "p90%" in scan.table()


def test_allocation_meets_a_size_target_and_a_drop_target():
    model, score = scored_mlp()
    scan = nt.sensitivity(model, score, sparsities=(0.5, 0.8, 0.95), bits=(8, 4, 2))
    loose = nt.allocate(scan, target_bytes=8000)
    tight = nt.allocate(scan, target_bytes=3000)
    assert tight.predicted_bytes <= 3000 < loose.predicted_bytes <= 8000
    assert tight.predicted_drop >= loose.predicted_drop
    for plan in (loose, tight):  # the plan is what Compression takes, and the archive is near its prediction
        m = mlp()
        m.load_state_dict(model.state_dict())
        comp = nt.Compression(m)
        comp.prune(plan.sparsity)
        comp.share(plan.bits)
        size = len(nt.pack(m))
        assert abs(size - plan.predicted_bytes) < 0.15 * plan.predicted_bytes + 200, (size, plan.predicted_bytes)
    careful = nt.allocate(scan, max_drop=0.01)
    assert careful.predicted_drop <= 0.01
    assert nt.allocate(scan, max_drop=10.0).predicted_bytes <= careful.predicted_bytes


@pytest.mark.parametrize("kwargs, message", [
    ({}, "exactly one of"),
    ({"max_drop": 0.1, "target_bytes": 100}, "exactly one of"),
    ({"target_bytes": 10}, "below the smallest plan"),
    ({"max_drop": -1}, "expected a number >= 0"),
])
def test_allocation_errors(kwargs, message):
    model, score = scored_mlp()
    scan = nt.sensitivity(model, score, sparsities=(0.5,), bits=(4,))
    with pytest.raises(nnar.errors.InvalidInput, match=message):
        nt.allocate(scan, **kwargs)


def test_sensitivity_refuses_a_non_number_score():
    model, _ = scored_mlp()
    with pytest.raises(nnar.errors.InvalidInput, match="expected a finite number"):
        nt.sensitivity(model, lambda m: float("nan"), sparsities=(0.5,), bits=(4,))


def test_schedule_shrinks_what_is_kept_geometrically():
    steps = nt.schedule({"a": 0.9, "b": 0.0}, 3)
    assert [round(s["a"], 4) for s in steps] == [0.5358, 0.7846, 0.9]
    assert all(s["b"] == 0 for s in steps)
    with pytest.raises(nnar.errors.InvalidInput):
        nt.schedule({"a": 0.5}, 0)
