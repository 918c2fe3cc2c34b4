"""The frad command itself."""

from __future__ import annotations

import json
import subprocess
import sys

import frad
from frad.cli import main


def test_version_and_help() -> None:
    r = subprocess.run([sys.executable, "-m", "frad", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == f"frad {frad.__version__}"
    r = subprocess.run([sys.executable, "-m", "frad", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "verify-lfw" in r.stdout and "models" in r.stdout


def test_models_json(capsys) -> None:
    assert main(["models", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert any(m["name"] == "dlib_resnet_v1" for m in out["models"])


def test_bad_device_is_one_line(capsys) -> None:
    assert main(["verify-lfw", "--data", ".", "--device", "warp-drive"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("frad: error: --device") and err.count("\n") == 1
