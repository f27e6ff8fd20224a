"""The committed generated code matches protos/, and the drift check can actually fail."""

from __future__ import annotations

import filecmp
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import REPO

SCRIPT = REPO / "scripts" / "gen_protos.py"
COMMITTED = REPO / "sandbox" / "api" / "v1"


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_protos_under_test", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_check_passes_on_the_committed_code() -> None:
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


def _copy_protos(tmp_path: Path) -> Path:
    root = tmp_path / "protos"
    shutil.copytree(REPO / "protos", root)
    return root


def _out_dir(tmp_path: Path) -> Path:
    out = tmp_path / "out"
    out.mkdir()
    return out


def _generated_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.is_file())


def test_unchanged_copy_generates_identical_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gen = load_script()
    monkeypatch.setattr(gen, "PROTO_ROOT", _copy_protos(tmp_path))
    out = gen.generate(_out_dir(tmp_path))
    names = _generated_files(out)
    assert "jobs_pb2.py" in names and "jobs_pb2_grpc.py" in names
    _, mismatch, errors = filecmp.cmpfiles(out, COMMITTED, names, shallow=False)
    assert (mismatch, errors) == ([], [])


def test_renamed_field_is_detected(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    gen = load_script()
    root = _copy_protos(tmp_path)
    jobs = root / "sandbox" / "api" / "v1" / "jobs.proto"
    text = jobs.read_text()
    assert "string alias = 3;" in text
    jobs.write_text(text.replace("string alias = 3;", "string label = 3;", 1))
    monkeypatch.setattr(gen, "PROTO_ROOT", root)

    out = gen.generate(_out_dir(tmp_path))
    names = _generated_files(out)
    _, mismatch, errors = filecmp.cmpfiles(out, COMMITTED, names, shallow=False)
    assert errors == []
    assert "jobs_pb2.py" in mismatch and "jobs_pb2.pyi" in mismatch
    assert "common_pb2.py" not in mismatch
    assert "label" in (out / "jobs_pb2.pyi").read_text()

    # The script's own --check compares against the committed code and fails (without writing).
    before = {p.name: p.read_bytes() for p in COMMITTED.iterdir() if p.is_file()}
    monkeypatch.setattr(sys, "argv", ["gen_protos.py", "--check"])
    assert gen.main() == 1
    assert "drifted" in capsys.readouterr().err
    after = {p.name: p.read_bytes() for p in COMMITTED.iterdir() if p.is_file()}
    assert after == before
