"""The feature cache: computed once, reused without running the network, invalidated by any change."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from frad.data.features import extract_features, input_key, input_preparation, prepare_inputs
from frad.data.folders import FaceDataset, load_identity_folders
from frad.models.base import FaceModel, ModelInfo, PixelPreprocess, Preprocessing, TapInfo, to_pixels


class Tiny(FaceModel):
    """A two-block random network with the FaceModel interface (fast stand-in for dlib's)."""

    def __init__(self, mean: float = 0.0, alignment: str = "dlib-5pt-150-pad0.25", resize: int | None = None) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.c1 = nn.Conv2d(3, 4, 3, stride=4)
        self.c2 = nn.Conv2d(4, 8, 3, stride=4)
        self.fc = nn.Linear(8, 6)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        self.preprocess = PixelPreprocess(
            Preprocessing(mean=(mean, mean, mean), scale=1 / 255, resize=resize, crop=resize)
        )
        self.info = ModelInfo(
            name="tiny", architecture="tiny", embedding_dim=6, input_size=(150, 150), alignment=alignment
        )
        self.feature_info = [TapInfo("b1", 4, 4, "c1"), TapInfo("b2", 8, 16, "c2"), TapInfo("embedding", 6, 16, "fc")]
        self.eval()

    def _features(self, x: torch.Tensor, wanted: set[str]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        a = F.relu(self.c1(x))
        b = F.relu(self.c2(a))
        return self.fc(b.mean((2, 3))), {"b1": a, "b2": b}


class Counter:
    """Counts network passes (calls of the model's preprocessing), optionally failing after some."""

    def __init__(self, model: FaceModel, fail_after: int | None = None) -> None:
        self.n = 0
        self.fail_after = fail_after
        self.handle = model.preprocess.register_forward_pre_hook(self)

    def __call__(self, *args: object) -> None:
        self.n += 1
        if self.fail_after is not None and self.n > self.fail_after:
            raise KeyboardInterrupt

    def remove(self) -> None:
        self.handle.remove()


def _chips(n: int = 10, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 150, 150, 3), dtype=np.uint8)


@pytest.fixture()
def ds() -> FaceDataset:
    return FaceDataset.from_arrays(
        _chips(), np.arange(10) % 2, ["a", "b"], name="mem", alignment="dlib-5pt-150-pad0.25"
    )


def test_second_extraction_reads_the_cache_without_running_the_network(ds: FaceDataset, tmp_path: Path) -> None:
    model = Tiny()
    count = Counter(model)
    first = extract_features(model, ds, batch_size=4, cache=tmp_path)
    assert count.n == 3 and first.computed == 1 and not first.from_cache
    second = extract_features(model, ds, batch_size=4, cache=tmp_path)
    assert count.n == 3 and second.from_cache  # not a single pass more
    assert list(second.taps) == ["b1", "b2", "embedding"]
    for k in first.taps:
        np.testing.assert_array_equal(first[k], second[k])
    # and the values are the model's own pooled taps
    with torch.no_grad():
        emb, taps = model.forward_intermediates(to_pixels(ds.pixels), pool=True)
    np.testing.assert_allclose(second.embedding, emb.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(second["b2"], taps["b2"].numpy(), rtol=1e-5, atol=1e-6)
    assert second["b1"].dtype == np.float32 and second["b1"].shape == (10, 4)
    assert second.ok.all() and second.methods == ["as-is"] * 10
    assert second.source["dataset"] == "mem" and len(second.subset([1, 2])) == 2


def test_changed_weights_or_preprocessing_invalidate(ds: FaceDataset, tmp_path: Path) -> None:
    model = Tiny()
    base = extract_features(model, ds, cache=tmp_path)
    changed = copy.deepcopy(model)
    with torch.no_grad():
        changed.fc.bias += 1.0
    count = Counter(changed)
    new = extract_features(changed, ds, cache=tmp_path)
    assert count.n > 0 and not new.from_cache and new.path != base.path
    np.testing.assert_allclose(new.embedding, base.embedding + 1.0, rtol=1e-5, atol=1e-5)
    other = Tiny(mean=10.0)  # same weights, other preprocessing
    count = Counter(other)
    assert not extract_features(other, ds, cache=tmp_path).from_cache and count.n > 0
    assert extract_features(Tiny(), ds, cache=tmp_path).from_cache  # the original is still cached


def test_changed_alignment_settings_or_data_change_the_key(tmp_path: Path) -> None:
    raw = FaceDataset.from_arrays(_chips(2), [0, 1], ["a", "b"], name="raw")  # not aligned yet
    model = Tiny()
    p1 = input_preparation(model, raw, detector="hog+cnn")
    p2 = input_preparation(model, raw, detector="hog")
    assert p1["kind"] == "align" and p1 != p2
    assert input_key(raw, p1) != input_key(raw, p2)
    other = FaceDataset.from_arrays(_chips(2, seed=1), [0, 1], ["a", "b"], name="raw")
    assert input_key(raw, p1) != input_key(other, p1)
    assert input_key(raw, p1) == input_key(FaceDataset.from_arrays(_chips(2), [0, 1], ["a", "b"], name="raw"), p1)


def test_interrupted_extraction_resumes_at_the_missing_chunk(ds: FaceDataset, tmp_path: Path) -> None:
    model = Tiny()
    count = Counter(model, fail_after=2)  # batch 2, chunk 4: dies in the second chunk
    with pytest.raises(KeyboardInterrupt):
        extract_features(model, ds, batch_size=2, chunk_size=4, cache=tmp_path)
    count.remove()
    count = Counter(model)
    done = extract_features(model, ds, batch_size=2, chunk_size=4, cache=tmp_path)
    assert (
        count.n == 2 + 1 and done.computed == 2 and done.chunks == 3
    )  # chunks 1 (2 batches) and 2 (1); chunk 0 was kept
    ref = extract_features(model, ds, cache=False)
    np.testing.assert_allclose(done.embedding, ref.embedding, rtol=1e-5, atol=1e-6)
    assert not [p for p in done.path.iterdir() if p.name.endswith(".tmp")]
    # a damaged chunk file is recomputed, not trusted
    (done.path / "b1.00001.npy").write_bytes(b"garbage")
    count.n = 0
    again = extract_features(model, ds, batch_size=2, chunk_size=4, cache=tmp_path)
    assert count.n == 2 and again.computed == 1
    np.testing.assert_array_equal(again["b1"], done["b1"])


def test_asking_for_more_taps_computes_only_those(ds: FaceDataset, tmp_path: Path) -> None:
    model = Tiny()
    emb_only = extract_features(model, ds, taps=["embedding"], cache=tmp_path)
    assert list(emb_only.taps) == ["embedding"]
    stamp = os.stat(emb_only.path / "embedding.00000.npy").st_mtime_ns
    full = extract_features(model, ds, taps="blocks", cache=tmp_path)
    assert list(full.taps) == ["b1", "b2", "embedding"] and full.computed == 1
    assert os.stat(full.path / "embedding.00000.npy").st_mtime_ns == stamp


def test_arrays_are_keyed_by_content(tmp_path: Path) -> None:
    model = Tiny()
    x = _chips(3)
    a = extract_features(model, x, cache=tmp_path)
    assert extract_features(model, x.copy(), cache=tmp_path).from_cache
    y = x.copy()
    y[0, 0, 0, 0] ^= 1  # one grey level in one pixel
    assert not extract_features(model, y, cache=tmp_path).from_cache
    assert a.methods is None and a.ok.all()
    keyed = extract_features(model, x, key="attack-run-1", cache=tmp_path)
    assert keyed.key == "attack-run-1" and not keyed.from_cache
    escaping = extract_features(model, x, key="../../outside", cache=tmp_path)
    assert escaping.path.parent == keyed.path.parent and ".." not in escaping.key
    with pytest.raises(Exception, match=r"\(N, H, W, 3\) uint8"):
        extract_features(model, x.astype(np.float32), cache=False)


def test_wrong_size_chip_is_reported_not_fatal(tmp_path: Path) -> None:
    root = tmp_path / "d"
    for i, size in enumerate([150, 150, 90]):
        (root / "p").mkdir(parents=True, exist_ok=True)
        Image.fromarray(_chips(1, i)[0][:size, :size]).save(root / "p" / f"{i}.png")
    ds = load_identity_folders(root, cache=False, alignment="dlib-5pt-150-pad0.25")
    feats = extract_features(Tiny(), ds, cache=False)
    assert feats.ok.tolist() == [True, True, False] and feats.methods[2] == "error"


def test_unaligned_model_gets_resized_images(tmp_path: Path) -> None:
    """alignment 'none' with resize 64: short side to 64, centre square, as the model's own preprocessing."""
    model = Tiny(alignment="none", resize=64)
    img = np.random.default_rng(0).integers(0, 256, (100, 80, 3), dtype=np.uint8)
    ds = FaceDataset.from_arrays(img[None], [0], ["a"], name="m")
    prep = prepare_inputs(ds, model)
    assert prep.pixels.shape == (1, 64, 64, 3)
    ref = Image.fromarray(img).resize((64, 80), Image.Resampling.BILINEAR).crop((0, 8, 64, 72))
    np.testing.assert_array_equal(prep.pixels[0], np.asarray(ref))


def test_real_faces_are_aligned_once(lfw_dir: Path, dlib_model, tmp_path: Path) -> None:
    from frad.data.lfw import lfw_people

    people = lfw_people(lfw_dir, min_images=10)
    ds = people.subset(np.arange(4))
    count = Counter(dlib_model)
    try:
        f1 = extract_features(dlib_model, ds, taps=["embedding"], cache=tmp_path)
        f2 = extract_features(dlib_model, ds, taps=["embedding"], cache=tmp_path)
    finally:
        count.remove()
    assert count.n == 1 and f2.from_cache
    assert f1.ok.all() and set(f1.methods) <= {"hog", "hog-up1", "cnn", "fallback"} and f2.methods == f1.methods
    assert f1.embedding.shape == (4, 128) and f1.source["variant"] == "lfw-deepfunneled"
