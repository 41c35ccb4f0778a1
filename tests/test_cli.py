"""The command line, end to end: in process through ``nnar.cli.main`` and as a real process
through ``python -m nnar``. Exit 0 ok, 1 an nnar error (one line on stderr), 2 a usage error."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import nnar
from nnar.cli import main
from nnar.errors import all_error_classes

from helpers import EXAMPLE, parse_safetensors

ROOT = Path(__file__).resolve().parents[1]
CODES = {cls.code for cls in all_error_classes()}


def run(*args: str, stdin: bytes | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    return subprocess.run([sys.executable, "-m", "nnar", *args], input=stdin, capture_output=True, cwd=cwd, env=env,
                          timeout=120)


def assert_one_error_line(stderr: str, code: str | None = None) -> str:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("nnar: error["), stderr
    found = lines[0][len("nnar: error["):].split("]", 1)[0]
    assert found in CODES
    if code is not None:
        assert found == code, stderr
    return found


@pytest.fixture
def model(tmp_path) -> Path:
    path = tmp_path / "model.safetensors"
    shutil.copy(EXAMPLE, path)
    return path


@pytest.fixture
def archive(tmp_path, model) -> Path:
    out = tmp_path / "model.nnar"
    assert main(["pack", str(model), "-o", str(out), "-q"]) == 0
    return out


# -- the main path ---------------------------------------------------------------------------------


def test_pack_ls_verify_unpack(tmp_path, model, capsys):
    out = tmp_path / "m.nnar"
    assert main(["pack", str(model), "-o", str(out)]) == 0
    cap = capsys.readouterr()
    assert cap.out == "" and cap.err.startswith("packed 6 tensors")
    assert out.stat().st_size < model.stat().st_size

    assert main(["ls", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["name", "dtype", "shape", "stored", "ratio", "pipeline"]
    names = [ln.split()[0] for ln in lines[1:-1]]
    assert sorted(names) == sorted(parse_safetensors(model)[1])
    assert any("bfloat16" in ln and "fc1.weight_bf16" in ln for ln in lines)
    assert any(ln.split()[:3] == ["steps", "int64", "scalar"] for ln in lines)
    assert lines[-1].startswith("6 tensors") and "source safetensors" in lines[-1]

    assert main(["verify", str(out)]) == 0
    assert capsys.readouterr().out.startswith("ok: 6 tensors")

    back = tmp_path / "back.safetensors"
    assert main(["unpack", str(out), "-o", str(back)]) == 0
    assert "unpacked 6 tensors" in capsys.readouterr().err
    assert parse_safetensors(back) == parse_safetensors(model)


def test_ls_json(archive, capsys):
    assert main(["ls", "--json", str(archive)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["metadata"] == {"format": "pt", "example": "nnar"}
    assert doc["source_format"] == "safetensors" and doc["nnar_version"] == nnar.__version__
    by_name = {t["name"]: t for t in doc["tensors"]}
    assert by_name["fc1.weight_bf16"]["dtype"] == "bfloat16" and by_name["fc1.weight_bf16"]["shape"] == [256, 64]
    assert by_name["steps"]["shape"] == [] and by_name["steps"]["nbytes"] == 8
    assert doc["totals"]["tensors"] == 6 == len(doc["tensors"])
    assert doc["totals"]["nbytes"] == sum(t["nbytes"] for t in doc["tensors"])
    assert all({"stored_bytes", "ratio", "digest", "pipeline"} <= set(t) for t in doc["tensors"])


def test_npz_in_and_out(tmp_path, capsys):
    src = tmp_path / "w.npz"
    np.savez(src, a=np.arange(10, dtype=np.int32), b=np.linspace(0, 1, 100))
    assert main(["pack", str(src), "-o", str(tmp_path / "w.nnar"), "--level", "9", "--meta", "k=v=w"]) == 0
    with nnar.open(tmp_path / "w.nnar") as a:
        assert a.metadata == {"k": "v=w"} and a.source_format == "npz"
    capsys.readouterr()
    assert main(["unpack", str(tmp_path / "w.nnar"), "-o", str(tmp_path / "o.npz")]) == 0
    assert "warning" in capsys.readouterr().err  # npz has no place for the metadata
    with np.load(tmp_path / "o.npz") as back:
        assert back["a"].tolist() == list(range(10)) and back["b"].tolist() == np.linspace(0, 1, 100).tolist()


def test_bfloat16_to_npz_warns_on_one_line_each(archive, tmp_path, capsys):
    assert main(["unpack", str(archive), "-o", str(tmp_path / "o.npz"), "-q"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert any(line.startswith("nnar: warning:") and "bfloat16" in line for line in err)


def test_quiet_pack_prints_nothing(tmp_path, model, capsys):
    assert main(["pack", str(model), "-o", str(tmp_path / "q.nnar"), "-q"]) == 0
    assert capsys.readouterr() == ("", "")


# -- exit codes and error lines --------------------------------------------------------------------


def test_missing_input_is_exit_1_with_one_line(tmp_path, capsys):
    for argv in (["verify", str(tmp_path / "nope.nnar")], ["ls", str(tmp_path / "nope.nnar")],
                 ["unpack", str(tmp_path / "nope.nnar"), "-o", str(tmp_path / "x.safetensors")],
                 ["pack", str(tmp_path / "nope.safetensors"), "-o", str(tmp_path / "x.nnar")]):
        assert main(argv) == 1
        cap = capsys.readouterr()
        assert cap.out == ""
        assert_one_error_line(cap.err, "io")


def test_verify_of_a_corrupted_archive_is_exit_1(archive, capsys):
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0x01
    archive.write_bytes(bytes(data))
    assert main(["verify", str(archive)]) == 1
    cap = capsys.readouterr()
    assert cap.out == ""
    assert assert_one_error_line(cap.err) in {"checksum", "digest", "codec-data", "bad-descriptor"}


def test_verify_of_a_truncated_archive_is_exit_1(archive, capsys):
    archive.write_bytes(archive.read_bytes()[:-10])
    assert main(["verify", str(archive)]) == 1
    assert_one_error_line(capsys.readouterr().err, "truncated")


def test_not_an_archive(tmp_path, model, capsys):
    assert main(["verify", str(model)]) == 1
    assert_one_error_line(capsys.readouterr().err, "bad-magic")


@pytest.mark.parametrize("argv", [
    [], ["frobnicate"], ["pack"], ["unpack"], ["ls"],  # (no -o is fine: pack and unpack name the output)
    ["pack", "x.safetensors", "-o", "y.nnar", "--level", "high"], ["pack", "a", "-o", "b", "--from", "tflite"],
    ["verify", "x.nnar", "--bogus"], ["ls", "x.nnar", "--max-tensors", "many"],
], ids=" ".join)
def test_usage_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "nnar: usage error:" in err and "error[" not in err


def test_help_and_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "nnar pack model.safetensors -o model.nnar" in out
    for sub in ("pack", "unpack", "ls", "verify"):
        assert sub in out
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"nnar {nnar.__version__}"


def test_bad_meta_is_invalid_input(tmp_path, model, capsys):
    assert main(["pack", str(model), "-o", str(tmp_path / "x.nnar"), "--meta", "novalue"]) == 1
    assert_one_error_line(capsys.readouterr().err, "invalid-input")
    assert not (tmp_path / "x.nnar").exists()


def test_limits_from_the_command_line(archive, capsys):
    assert main(["verify", str(archive), "--max-tensor-bytes", "100"]) == 1
    assert_one_error_line(capsys.readouterr().err, "limit-exceeded")
    assert main(["ls", str(archive), "--max-tensors", "2"]) == 1
    assert_one_error_line(capsys.readouterr().err, "limit-exceeded")
    assert main(["verify", str(archive), "--max-tensors", "6"]) == 0


def test_out_of_range_level_is_a_usage_error(tmp_path, model, capsys):
    for level in ("0", "23", "99", "-200000"):
        with pytest.raises(SystemExit) as e:
            main(["pack", str(model), "-o", str(tmp_path / "x.nnar"), "--level", level])
        assert e.value.code == 2


# -- outputs: never clobbered, never partial --------------------------------------------------------


def test_existing_output_needs_force(tmp_path, model, archive, capsys):
    before = archive.read_bytes()
    other = tmp_path / "other.npz"
    np.savez(other, z=np.zeros(3))
    assert main(["pack", str(other), "-o", str(archive)]) == 1
    assert_one_error_line(capsys.readouterr().err, "output-exists")
    assert archive.read_bytes() == before
    assert main(["pack", str(other), "-o", str(archive), "--force"]) == 0
    assert list(nnar.unpack(archive)) == ["z"]
    capsys.readouterr()

    target = tmp_path / "t.safetensors"
    target.write_bytes(b"keep me")
    assert main(["unpack", str(archive), "-o", str(target)]) == 1
    assert_one_error_line(capsys.readouterr().err, "output-exists")
    assert target.read_bytes() == b"keep me"
    assert main(["unpack", str(archive), "-o", str(target), "-f"]) == 0
    assert parse_safetensors(target)[1]["z"][0] == "F64"


@pytest.mark.parametrize("force", [[], ["--force"]])
def test_the_input_is_never_overwritten(tmp_path, model, force, capsys):
    before = model.read_bytes()
    assert main(["pack", str(model), "-o", str(model), *force]) == 1
    assert_one_error_line(capsys.readouterr().err, "invalid-input")
    assert model.read_bytes() == before
    link = tmp_path / "link.safetensors"
    link.symlink_to(model)
    assert main(["pack", str(link), "-o", str(model), *force]) == 1
    assert model.read_bytes() == before
    arc = tmp_path / "a.nnar"
    main(["pack", str(model), "-o", str(arc), "-q"])
    arc_bytes = arc.read_bytes()
    assert main(["unpack", str(arc), "-o", str(arc), "--to", "safetensors", *force]) == 1
    assert arc.read_bytes() == arc_bytes


def _listing(d: Path) -> set[str]:
    return {p.name for p in d.iterdir()}


def test_no_temporary_files_after_a_failed_run(tmp_path, archive, capsys):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    truncated = tmp_path / "cut.nnar"
    truncated.write_bytes(archive.read_bytes()[: archive.stat().st_size * 2 // 3])
    assert main(["unpack", str(truncated), "-o", str(out_dir / "m.safetensors")]) == 1
    assert main(["unpack", str(truncated), "-o", str(out_dir / "m.npz")]) == 1
    bad_model = tmp_path / "bad.safetensors"  # valid up to a tensor whose name nnar refuses
    header = json.dumps({"ok": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                         "bad\nname": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}).encode()
    bad_model.write_bytes(len(header).to_bytes(8, "little") + header + bytes(16))
    assert main(["pack", str(bad_model), "-o", str(out_dir / "x.nnar")]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3 and all(e.startswith("nnar: error[") for e in err)
    assert _listing(out_dir) == set()


def test_a_directory_as_output_is_invalid_input(tmp_path, model, capsys):
    assert main(["pack", str(model), "-o", str(tmp_path)]) == 1
    assert_one_error_line(capsys.readouterr().err, "invalid-input")


def test_unpack_to_stdout_needs_a_format(archive, capsys):
    assert main(["unpack", str(archive), "-o", "-"]) == 1
    assert_one_error_line(capsys.readouterr().err, "invalid-input")


def test_pack_to_stdout_in_process(model, capsysbinary):
    assert main(["pack", str(model), "-o", "-", "-q"]) == 0
    out = capsysbinary.readouterr().out
    assert out.startswith(b"\x89NNAR\r\n\x1a")
    assert sorted(nnar.unpack(out)) == sorted(parse_safetensors(model)[1])


def test_archive_from_stdin_in_process(archive, monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(archive.read_bytes())))
    assert main(["ls", "-"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("6 tensors")


# -- as a real process, through pipes ---------------------------------------------------------------


def test_pipes_both_ways(tmp_path, model):
    packed = run("pack", str(model), "-o", "-")
    assert packed.returncode == 0, packed.stderr
    assert packed.stdout.startswith(b"\x89NNAR") and b"packed 6 tensors" in packed.stderr
    out = tmp_path / "o.safetensors"
    unpacked = run("unpack", "-", "-o", str(out), stdin=packed.stdout)
    assert unpacked.returncode == 0, unpacked.stderr
    assert parse_safetensors(out) == parse_safetensors(model)
    repacked = run("pack", "-", "--from", "safetensors", "-o", "-", "-q", stdin=model.read_bytes())
    assert repacked.returncode == 0 and repacked.stderr == b""
    assert nnar.unpack(repacked.stdout).keys() == nnar.unpack(packed.stdout).keys()
    npz = run("unpack", "-", "-o", "-", "--to", "npz", "-q", stdin=packed.stdout)
    assert npz.returncode == 0
    with np.load(io.BytesIO(npz.stdout)) as back:
        assert back["fc1.weight_bf16"].dtype == np.float32 and back["steps"].shape in ((), (1,))


def test_ls_and_verify_from_stdin(archive):
    listed = run("ls", "--json", "-", stdin=archive.read_bytes())
    assert listed.returncode == 0
    assert json.loads(listed.stdout)["totals"]["tensors"] == 6
    assert run("verify", "-", stdin=archive.read_bytes()).returncode == 0
    damaged = run("verify", "-", stdin=archive.read_bytes()[:-1])
    assert damaged.returncode == 1 and damaged.stdout == b""
    assert_one_error_line(damaged.stderr.decode(), "truncated")


def test_exit_codes_as_a_process(tmp_path, archive):
    assert run("verify", str(archive)).returncode == 0
    missing = run("verify", str(tmp_path / "nope.nnar"))
    assert missing.returncode == 1
    assert_one_error_line(missing.stderr.decode(), "io")
    usage = run("pack")
    assert usage.returncode == 2 and b"usage" in usage.stderr
    helped = run("--help")
    assert helped.returncode == 0 and b"examples:" in helped.stdout


def test_a_relative_output_in_the_working_directory(tmp_path, model):
    r = run("pack", model.name, "-o", "rel.nnar", "-q", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "rel.nnar").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_a_reader_that_goes_away_is_not_an_error_message(tmp_path):
    src = tmp_path / "big.npz"
    np.savez(src, w=np.random.default_rng(0).integers(0, 1 << 30, 1 << 20))  # 8 MiB: far more than a pipe holds
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    with subprocess.Popen([sys.executable, "-m", "nnar", "pack", str(src), "-o", "-", "-q"], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, env=env) as proc:
        assert proc.stdout.read(16).startswith(b"\x89NNAR")
        proc.stdout.close()
        err = proc.stderr.read()
        assert proc.wait(timeout=120) != 0
    assert err == b""
