"""Shared fixtures: the LFW folder (given explicitly), dlib's network, a private cache folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--lfw-dir",
        default=os.environ.get("FRAD_LFW_DIR"),
        help="LFW folder for the tests that need real faces, as --lfw-dir=DIR (default: $FRAD_LFW_DIR); "
        "they skip without it",
    )


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep every cache the tests create out of the user's cache folder."""
    if not os.environ.get("FRAD_TEST_CACHE_DIR"):
        os.environ["FRAD_CACHE_DIR"] = str(tmp_path_factory.mktemp("frad-cache"))
    else:
        os.environ["FRAD_CACHE_DIR"] = os.environ["FRAD_TEST_CACHE_DIR"]
    os.environ.setdefault("FRAD_PROGRESS", "0")


@pytest.fixture(scope="session")
def lfw_dir(request: pytest.FixtureRequest) -> Path:
    """The LFW folder, or skip: pass --lfw-dir=DIR or set FRAD_LFW_DIR to run LFW tests."""
    value = request.config.getoption("--lfw-dir")
    if not value:
        pytest.skip("LFW not given: pass --lfw-dir=DIR or set FRAD_LFW_DIR to run the tests on real faces")
    path = Path(value).expanduser()
    if not (path / "protocol" / "pairs.txt").is_file() and not (path / "pairs.txt").is_file():
        pytest.skip(f"LFW folder {path} not found or has no pairs.txt")
    return path


@pytest.fixture(scope="session")
def dlib_model():
    """dlib's face ResNet, loaded once per session."""
    from frad.models import create_model

    return create_model("dlib_resnet_v1")


@pytest.fixture(scope="module")
def one_thread():
    """Run a module on one torch thread (small models are much faster so), restoring it after."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
