"""Model folders (spec/folder.md, FORMAT.md §5.7): a folder saved by transformers, sharded, with
its config and tokenizer, packs in one command and unpacks to a folder that from_pretrained
loads with identical outputs; legacy .bin shards too; lossy settings span the shards; hostile
folders and paths fail cleanly."""

import json
import os
import warnings

import numpy as np
import pytest

import nnar
from nnar import cli

import torch  # noqa: E402  (installed by tools/test.sh: a missing one must fail, not skip)
import transformers  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::nnar.lossy.LossyWarning")


def _bert(seed=0):
    torch.manual_seed(seed)
    cfg = transformers.BertConfig(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                  intermediate_size=64, max_position_embeddings=64)
    return transformers.BertModel(cfg).eval()


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A BERT saved sharded (3+ shards and their index), with a tokenizer and a sub-folder."""
    root = tmp_path_factory.mktemp("hf") / "model"
    model = _bert()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save_pretrained(root, max_shard_size="40KB")
    vocab = root / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(115)]) + "\n")
    transformers.BertTokenizerFast(vocab_file=str(vocab)).save_pretrained(root)
    (root / "1_Pooling").mkdir()
    (root / "1_Pooling" / "config.json").write_text('{"pooling_mode_mean_tokens": true}\n')
    shards = sorted(p.name for p in root.glob("model-*.safetensors"))
    assert len(shards) >= 3 and (root / "model.safetensors.index.json").exists(), sorted(os.listdir(root))
    return root, model


def _files(root):
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _outputs(path):
    model = transformers.BertModel.from_pretrained(path).eval()
    ids = torch.randint(0, 120, (3, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return model(ids).last_hidden_state


def test_a_sharded_folder_round_trips_byte_for_byte_and_runs(saved, tmp_path):
    root, model = saved
    archive, out = tmp_path / "m.nnar", tmp_path / "out"
    infos = nnar.pack(root, archive)
    assert len(infos) == len(model.state_dict())
    with nnar.open(archive) as a:
        assert a.structure[0] == "folder"
        assert set(a.files()) == set(_files(root)) - {p for p in _files(root) if p.endswith(".safetensors")}
        a.verify()
    nnar.unpack(archive, out)
    assert _files(out) == _files(root)  # shards, index, config, tokenizer, sub-folder: the same bytes
    assert torch.equal(_outputs(out), _outputs(root))
    tok = transformers.AutoTokenizer.from_pretrained(out)
    assert tok("w1 w2")["input_ids"] == transformers.AutoTokenizer.from_pretrained(root)("w1 w2")["input_ids"]


def test_lossy_settings_span_the_shards_as_one_model(saved, tmp_path):
    root, _ = saved
    archive, out = tmp_path / "m.nnar", tmp_path / "out"
    infos = nnar.pack(root, archive, config={"prune_global": 0.5, "quant": "uniform", "bits": 8})
    # one threshold over every shard: the sparsity is global, not 50% in each tensor
    pruned = [i for i in infos if i.fidelity.get("sparsity") is not None]
    sparsities = {round(i.fidelity["sparsity"], 2) for i in pruned}
    assert len(pruned) > 4 and len(sparsities) > 2, sparsities
    nnar.unpack(archive, out)
    assert _files(out)["config.json"] == _files(root)["config.json"]
    ref, got = _outputs(root), _outputs(out)
    assert got.shape == ref.shape and not torch.equal(got, ref) and torch.isfinite(got).all()


def test_legacy_bin_shards_with_a_tie(tmp_path):
    root = tmp_path / "legacy"
    root.mkdir()
    w = torch.randn(16, 8)
    shard1 = {"emb.weight": w, "head.weight": w, "a.bias": torch.zeros(16)}  # head tied to emb
    shard2 = {"b.weight": torch.randn(4, 4, dtype=torch.bfloat16)}
    torch.save(shard1, root / "pytorch_model-00001-of-00002.bin")
    torch.save(shard2, root / "pytorch_model-00002-of-00002.bin")
    index = {"metadata": {}, "weight_map": {**{k: "pytorch_model-00001-of-00002.bin" for k in shard1},
                                            **{k: "pytorch_model-00002-of-00002.bin" for k in shard2}}}
    (root / "pytorch_model.bin.index.json").write_text(json.dumps(index))
    archive, out = tmp_path / "m.nnar", tmp_path / "out"
    nnar.pack(root, archive)
    with nnar.open(archive) as a:
        assert a.aliases() == {"head.weight": "emb.weight"} and a.files() == ["pytorch_model.bin.index.json"]
    nnar.unpack(archive, out)
    got1 = torch.load(out / "pytorch_model-00001-of-00002.bin", weights_only=True)
    got2 = torch.load(out / "pytorch_model-00002-of-00002.bin", weights_only=True)
    assert list(got1) == list(shard1) and list(got2) == list(shard2)
    assert torch.equal(got1["emb.weight"], w) and got1["head.weight"].data_ptr() == got1["emb.weight"].data_ptr()
    assert got2["b.weight"].dtype == torch.bfloat16 and torch.equal(got2["b.weight"], shard2["b.weight"])
    assert (out / "pytorch_model.bin.index.json").read_bytes() == (root / "pytorch_model.bin.index.json").read_bytes()


def test_a_bin_beside_safetensors_is_left_out_with_a_warning(tmp_path):
    root = tmp_path / "both"
    root.mkdir()
    from nnar.formats import safetensors as st
    with open(root / "model.safetensors", "wb") as f:
        st.write(f, [("w", np.ones((2, 2), np.float32), "float32")], {"format": "pt"})
    torch.save({"w": torch.ones(2, 2)}, root / "pytorch_model.bin")
    with pytest.warns(UserWarning, match="pytorch_model.bin left out"):
        nnar.pack(root, tmp_path / "m.nnar")
    with nnar.open(tmp_path / "m.nnar") as a:
        assert a.names() == ["w"] and a.files() == []


def test_cli_names_the_outputs_like_tar_would(saved, tmp_path, monkeypatch, capsys):
    root, _ = saved
    monkeypatch.chdir(tmp_path)
    (tmp_path / "model").symlink_to(root, target_is_directory=True)
    assert cli.main(["pack", "model/", "-q"]) == 0  # DIR/ -> DIR.nnar, as tar and zstd name things
    os.rename("model.nnar", "m.nnar")
    assert cli.main(["ls", "m.nnar"]) == 0
    listed = capsys.readouterr().out
    assert "\nfiles: " in listed and "1_Pooling/config.json" in listed and "config.json" in listed
    (tmp_path / "m").symlink_to(root, target_is_directory=True)
    assert cli.main(["unpack", "m.nnar", "-q"]) == 1  # m exists: the default output, never replaced silently
    assert "output-exists" in capsys.readouterr().err
    (tmp_path / "m").unlink()
    assert cli.main(["unpack", "m.nnar", "-q"]) == 0
    assert _files(tmp_path / "m") == _files(root)
    assert cli.main(["unpack", "m.nnar", "-o", "m", "--force", "-q"]) == 0  # replaced whole
    assert _files(tmp_path / "m") == _files(root)
    assert cli.main(["unpack", "m.nnar", "-o", "all.safetensors", "-q"]) == 0  # or one bag of tensors
    assert len(nnar.pack("all.safetensors", "all.nnar")) == len(_bert().state_dict())
    leftovers = [p for p in os.listdir(tmp_path) if p.startswith(".nnar")]
    assert leftovers == []


def test_hostile_folders_fail_cleanly(tmp_path):
    root = tmp_path / "bad"
    root.mkdir()
    from nnar.formats import safetensors as st
    with open(root / "model.safetensors", "wb") as f:
        st.write(f, [("w", np.ones(2, np.float32), "float32")], {})
    os.mkfifo(root / "pipe")  # reading it would block forever
    with pytest.raises(nnar.InvalidInput, match="not a regular file"):
        nnar.pack(root, tmp_path / "x.nnar")
    os.unlink(root / "pipe")
    (root / "loop").symlink_to(root, target_is_directory=True)
    with pytest.raises(nnar.InvalidInput, match="link to a directory"):
        nnar.pack(root, tmp_path / "x.nnar")
    os.unlink(root / "loop")
    (root / "c:evil").write_text("x")
    with pytest.raises(nnar.InvalidInput, match="cannot be stored"):
        nnar.pack(root, tmp_path / "x.nnar")
    os.unlink(root / "c:evil")
    (root / "notes.txt").write_text("no weights here")
    os.unlink(root / "model.safetensors")
    with pytest.raises(nnar.InvalidInput, match="no weights file"):
        nnar.pack(root, tmp_path / "x.nnar")
    assert not (tmp_path / "x.nnar").exists()


def test_a_folder_archive_written_by_hand_cannot_climb_out(tmp_path):
    """FILE paths are checked when written, read and unpacked (FORMAT.md §5.7)."""
    import io
    from nnar.archive import ArchiveWriter
    buf = io.BytesIO()
    with ArchiveWriter(buf) as w:
        for bad in ("../x", "/etc/passwd", "a//b", "a\\b", "", "a/./b"):
            with pytest.raises(nnar.BadDescriptor, match="path"):
                w.write_file(bad, b"x")
        w.write_file("ok/config.json", b"{}")
        w.write("t", np.zeros(2, np.float32))
        with pytest.raises(nnar.WriterStateError, match="before any tensor"):
            w.write_file("late.txt", b"x")
    with nnar.open(buf.getvalue()) as a:
        assert a.files() == ["ok/config.json"] and a.read_file("ok/config.json") == b"{}"
        with pytest.raises(nnar.TensorNotFound):
            a.read_file("nope")
    # not packed from a folder: nothing to write one from
    path = tmp_path / "plain.nnar"
    path.write_bytes(buf.getvalue())
    with pytest.raises(nnar.InvalidInput, match="no model folder"):
        nnar.unpack(path, tmp_path / "out", to="folder")
    assert not (tmp_path / "out").exists()


def test_max_shard_size_reshards_as_transformers_would(saved, tmp_path):
    root, _ = saved
    archive = tmp_path / "m.nnar"
    nnar.pack(root, archive)
    assert cli.main(["unpack", str(archive), "-o", str(tmp_path / "fine"), "--max-shard-size", "20KB", "-q"]) == 0
    fine = tmp_path / "fine"
    shards = sorted(p.name for p in fine.glob("model-*.safetensors"))
    assert len(shards) > len(list(root.glob("model-*.safetensors"))) and shards[0].endswith(f"of-{len(shards):05d}.safetensors")
    index = json.loads((fine / "model.safetensors.index.json").read_text())
    assert sorted(set(index["weight_map"].values())) == shards
    assert torch.equal(_outputs(fine), _outputs(root))
    nnar.unpack(archive, tmp_path / "one", max_shard_size=10 ** 9)  # everything fits: one file, no index
    assert sorted(p.name for p in (tmp_path / "one").glob("*.safetensors")) == ["model.safetensors"]
    assert not (tmp_path / "one" / "model.safetensors.index.json").exists()
    assert torch.equal(_outputs(tmp_path / "one"), _outputs(root))
    with pytest.raises(nnar.InvalidInput, match="reshards a model folder"):
        nnar.unpack(archive, tmp_path / "x.safetensors", max_shard_size=1000)
    with pytest.raises(SystemExit) as e:  # a usage error, as argparse reports them
        cli.main(["unpack", str(archive), "-o", str(tmp_path / "bad"), "--max-shard-size", "lots"])
    assert e.value.code == 2 and not (tmp_path / "bad").exists()


def test_folder_updates_patch_their_files_too(saved, tmp_path, monkeypatch):
    """A new config and a fine-tuned shard, as one content patch (spec/patch.md), applied where
    zstd encodes otherwise: the device's folder is the server's, file for file."""
    import zstandard
    from nnar.codecs import zstd as Z
    root, model = saved
    v2 = tmp_path / "v2"
    import shutil
    shutil.copytree(root, v2)
    import copy
    model = copy.deepcopy(model)
    with torch.no_grad():
        model.encoder.layer[1].output.dense.weight.add_(1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.save_pretrained(v2, max_shard_size="40KB")
    (v2 / "config.json").write_text((v2 / "config.json").read_text().replace("{", '{"revision": 2, ', 1))
    (v2 / "generation_config.json").write_text("{}\n")
    a, b, p = tmp_path / "v1.nnar", tmp_path / "v2.nnar", tmp_path / "u.nnarpatch"
    nnar.pack(root, a)
    nnar.pack(v2, b)
    stat = nnar.diff(a, b, p)
    assert {r.path for r in stat.records if r.record_type == "FILE" and r.action != "unchanged"} >= \
        {"config.json", "generation_config.json"}
    monkeypatch.setattr(Z.Zstd, "encode", lambda self, data: (zstandard.ZstdCompressor(
        level=self.level + 2, write_content_size=True, write_checksum=True).compress(data), {}))
    nnar.patch(a, p, tmp_path / "device.nnar")
    nnar.unpack(tmp_path / "device.nnar", tmp_path / "device")
    assert _files(tmp_path / "device") == _files(v2)
