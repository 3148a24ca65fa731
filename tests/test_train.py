"""Trainer unit tests on the tiny CLIP (random weights: these check plumbing, shapes and exact
behaviour, not accuracy): identity at init, config handling, bad inputs, augmentation alignment,
splits, losses and checkpoint contents."""

from __future__ import annotations

import os
import re
import shutil

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)

from toy_store import write_toy_store  # noqa: E402

from fineschema import SCHEMA_VERSION, StoreError, layout  # noqa: E402
from finetrain.config import ConfigError, load_config, parse_override  # noqa: E402
from finetrain.data.split import SplitError, fold_split, stratified_holdout  # noqa: E402
from finetrain.data.store import StoreDataset, StoreInfo  # noqa: E402
from finetrain.data.transforms import finalize  # noqa: E402
from finetrain.model.losses import compute_loss  # noqa: E402
from finetrain.model.model import build_model, count_parameters  # noqa: E402
from finetrain.train import checkpoint as ckpt  # noqa: E402
from finetrain.train.recipe import prepare  # noqa: E402


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return write_toy_store(tmp_path_factory.mktemp("toy") / "store", clips_per_class=4, descriptions=True)


@pytest.fixture(scope="module")
def model(store):
    cfg = load_config("tiny")
    torch.manual_seed(0)
    return build_model(cfg, StoreInfo.open(store).labels, frames=4)


def _plain_clip(model):
    """A plain open_clip model with the adapted model's backbone weights."""
    import open_clip

    plain = open_clip.create_model("fineclip-tiny", pretrained=None).eval()
    own = {re.sub(r"(resblocks\.\d+)\.block\.", r"\1.", k): v for k, v in model.clip.state_dict().items()
           if ".adapters." not in k}
    plain.load_state_dict(own, strict=True)
    return plain


def test_identity_at_init(model):
    """Zero-initialised up-projections: every adapter set reproduces plain CLIP to 1e-5."""
    plain = _plain_clip(model)
    torch.manual_seed(1)
    images = torch.randn(3, 3, model.image_size, model.image_size)
    tokens = model.tokenizer(["a person smiling", "a frowning face"])
    with torch.no_grad():
        ref_img, ref_txt = plain.encode_image(images), plain.encode_text(tokens)
        for name in ("frames", "parsing", "landmarks"):
            assert torch.allclose(model.encode_image(images, name), ref_img, atol=1e-5), name
        for name in ("positive", "negative", "description"):
            assert torch.allclose(model.encode_text(tokens, name), ref_txt, atol=1e-5), name
        # and the check can fail: a non-zero up-projection in one set changes that set only
        up = model.clip.visual.transformer.resblocks[0].adapters["parsing"].attn.up.weight
        up.copy_(torch.randn_like(up))
        try:
            assert not torch.allclose(model.encode_image(images, "parsing"), ref_img, atol=1e-3)
            assert torch.allclose(model.encode_image(images, "frames"), ref_img, atol=1e-5)
        finally:
            up.zero_()


def test_backbone_frozen_and_counts(model):
    trainable, total = count_parameters(model)
    assert 0 < trainable < total
    assert not any(p.requires_grad for n, p in model.clip.named_parameters() if ".adapters." not in n)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any(".adapters.frames." in n for n in names) and any(".adapters.negative." in n for n in names)
    assert "fusion_logits" in names


def test_checkpoint_holds_only_trainable_tensors(model, tmp_path):
    from safetensors.torch import load_file

    cfg = load_config("tiny")
    ckpt.save(tmp_path / "c", model, cfg.to_json(), model.labels, {"epoch": 1})
    saved = load_file(str(tmp_path / "c" / ckpt.MODEL_FILE))
    expected = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(saved) == expected
    assert sum(t.numel() for t in saved.values()) == count_parameters(model)[0]
    meta = ckpt.read_meta(tmp_path / "c")
    assert meta["labels"] == list(model.labels) and meta["config"]["model"]["backbone"] == "fineclip-tiny"


def test_config_overrides_and_unknown_keys():
    cfg = load_config("tiny", ["optim.lr=5e-4", "model.streams=[frames, blendshapes]", "model.pretrained=null"])
    assert cfg.optim.lr == 5e-4 and cfg.model.streams == ["frames", "blendshapes"] and cfg.model.pretrained is None
    assert parse_override("optim.epochs=3") == {"optim": {"epochs": 3}}
    with pytest.raises(ConfigError, match=r"unknown config key 'optim.lrr'"):
        load_config("tiny", ["optim.lrr=1"])
    with pytest.raises(ConfigError, match="unknown config section 'optm'"):
        load_config("tiny", ["optm.lr=1"])
    with pytest.raises(ConfigError, match="wants int"):
        load_config("tiny", ["optim.epochs=many"])
    with pytest.raises(ConfigError, match="unknown stream 'audio'"):
        load_config("tiny", ["model.streams=[frames, audio]"])
    with pytest.raises(ConfigError, match="unknown config 'nope'"):
        load_config("nope")
    assert load_config().model.backbone == "ViT-B-16"


def test_bad_stores_refused(tmp_path, store):
    cfg = load_config("tiny")
    newer = write_toy_store(tmp_path / "newer", clips_per_class=1, version=SCHEMA_VERSION + 1)
    with pytest.raises(StoreError, match="schema version"):
        prepare(cfg, newer)
    broken = tmp_path / "broken"
    shutil.copytree(store, broken)
    shutil.rmtree(broken / layout.ARRAYS_DIR / "landmarks")
    with pytest.raises(StoreError, match="array 'landmarks' is missing"):
        prepare(cfg, broken)
    with pytest.raises(SplitError, match="fold 9 is not in this store"):
        prepare(load_config("tiny", ["run.fold=9"]), store)


def test_descriptors_must_cover_the_class_set(tmp_path, store):
    desc = tmp_path / "d.yaml"
    desc.write_text("positive: 'A {label} face.'\nnegative: 'No {label} face.'\nclasses:\n  happiness: [smile]\n")
    with pytest.raises(ConfigError, match="no entry for sadness, neutral"):
        prepare(load_config("tiny", [f"model.descriptors={desc}"]), store)


def test_cli_error_is_one_line(tmp_path, store):
    from typer.testing import CliRunner

    from finetrain.cli import app

    result = CliRunner().invoke(app, ["run", "--store", str(store), "--out", str(tmp_path / "r"),
                                      "--config", "tiny", "optim.bogus=1"])
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "optim.bogus" in lines[0], result.output


def test_augmentation_is_shared_by_frames_parsing_and_landmarks(tmp_path):
    """A white square, parsing class 1 on it and every landmark at its centre: after random crops and
    flips the overlay and the dots still sit on the square."""
    import zarr

    root = write_toy_store(tmp_path / "s", clips_per_class=1, frames=2, size=48)
    g = zarr.open_group(str(root / layout.ARRAYS_DIR), mode="r+")
    n = g["frames"].shape[0]
    frames = np.zeros((n, 2, 48, 48, 3), np.uint8)
    frames[:, :, 10:26, 20:36] = 255
    parsing = np.zeros((n, 2, 48, 48), np.uint8)
    parsing[:, :, 10:26, 20:36] = 1
    lms = np.zeros((n, 2, layout.NUM_LANDMARKS, 3), np.float32)
    lms[..., 0], lms[..., 1] = 28 / 48, 18 / 48
    g["frames"][:], g["parsing"][:], g["landmarks"][:] = frames, parsing, lms
    info = StoreInfo.open(root)
    cfg = load_config("tiny", ["data.jitter=0", "data.crop_scale=[0.5, 0.9]", "data.landmark_radius=0"])
    ds = StoreDataset(info, range(n), image_size=64, frames=2, train=True, data_cfg=cfg.data)
    flips = set()
    for epoch in range(4):
        ds.set_epoch(epoch)
        for i in range(n):
            item = finalize(ds[i])
            white = item["frames"][:, 0] > 0  # above mid-grey (normalised)
            painted = (item["parsing"] - item["frames"]).abs().sum(1) > 1e-3
            dots = (item["landmarks"] - item["frames"]).abs().sum(1) > 1e-3
            assert painted.any() and dots.any()
            overlap = (white & painted).sum() / painted.sum()
            assert overlap > 0.9, float(overlap)
            assert white[dots].float().mean() > 0.99
            cols = white.any(1).float().argmax(-1)
            flips.add(int(cols[0]) > 20)
    assert flips == {True, False}  # both flipped and unflipped crops were seen


def test_dataset_shapes_and_determinism(store):
    info = StoreInfo.open(store)
    ds = StoreDataset(info, range(len(info)), image_size=64, frames=2, train=True,
                      streams=("frames", "parsing", "landmarks", "blendshapes", "description"),
                      tokenizer=__import__("open_clip").get_tokenizer("fineclip-tiny"))
    a, b = ds[3], ds[3]
    assert a["frames"].shape == (2, 3, 64, 64) and a["blendshapes"].shape == (2, 52)
    assert a["description"].shape == (77,) and a["has_description"]
    assert a["frames"].dtype == torch.uint8 and a["jitter"].shape == (3,)
    assert torch.equal(a["frames"], b["frames"])  # same (seed, epoch, clip) -> same augmentation
    ds.set_epoch(1)
    assert not torch.equal(ds[3]["frames"], a["frames"])
    x = finalize(torch.utils.data.default_collate([a, b]))["frames"]
    assert x.dtype == torch.float32 and x.shape == (2, 2, 3, 64, 64)
    assert float(x.min()) > -2.5 and float(x.max()) < 2.5  # CLIP-normalised, not 0..255


def test_stratified_split_is_seeded_and_disjoint():
    labels = np.repeat(np.arange(4), [10, 6, 3, 1])
    keep, held = stratified_holdout(labels, 0.2, seed=3)
    assert not set(keep) & set(held) and len(keep) + len(held) == len(labels)
    assert sorted(np.bincount(labels[held], minlength=4).tolist()) == [0, 1, 1, 2]
    assert np.array_equal(held, stratified_holdout(labels, 0.2, seed=3)[1])
    train_folds = [[2] if i % 2 else [1] for i in range(len(labels))]
    test_folds = [[1] if i % 2 else [2] for i in range(len(labels))]
    split = fold_split(train_folds, test_folds, labels, fold=1, val_fraction=0.2, seed=0)
    assert not set(split.test) & (set(split.train) | set(split.val))
    assert all(i % 2 == 1 for i in split.test)


def test_losses_follow_their_formulas():
    from finetrain.config import LossConfig

    cfg = LossConfig(logit_scale=10.0, ce=1.0, negative=0.5, description=0.0)
    sim_pos = torch.tensor([[0.5, 0.1], [0.2, 0.3]])
    sim_neg = torch.tensor([[0.4, 0.0], [0.0, 0.6]])
    labels = torch.tensor([0, 1])
    total, parts = compute_loss({"sim_pos": sim_pos, "sim_neg": sim_neg}, labels, cfg)
    ce = torch.nn.functional.cross_entropy(10 * sim_pos, labels)
    neg = torch.nn.functional.cross_entropy(-10 * sim_neg, labels)  # the true class's negative least similar
    assert parts["ce"] == pytest.approx(float(ce)) and parts["neg"] == pytest.approx(float(neg))
    assert float(total) == pytest.approx(float(ce + 0.5 * neg))


def test_forward_with_descriptions_trains_every_part(model, store):
    """One backward pass reaches every trainable tensor (description adapters included)."""
    info = StoreInfo.open(store)
    ds = StoreDataset(info, range(4), image_size=model.image_size, frames=4, train=True,
                      streams=model.streams, tokenizer=model.tokenizer)
    batch = torch.utils.data.default_collate([ds[i] for i in range(4)])
    model.train()
    out = model(batch)
    assert out["logits"].shape == (4, 7)
    loss, parts = compute_loss(out, batch["label"], model.cfg.loss)
    assert set(parts) == {"ce", "neg", "desc"}
    model.zero_grad()
    loss.backward()
    # up-projections start at zero, so their grads are non-zero while down-projections' are zero
    ups = [p for n, p in model.named_parameters() if n.endswith("up.weight")]
    assert ups and all(p.grad is not None and p.grad.abs().sum() > 0 for p in ups)
    model.zero_grad()


def test_description_stream_is_optional_per_batch(model, store):
    """A batch without description tokens (a new video) leaves that stream out of the fusion."""
    info = StoreInfo.open(store)
    ds = StoreDataset(info, range(2), image_size=model.image_size, frames=4, streams=model.streams)
    batch = torch.utils.data.default_collate([ds[0], ds[1]])
    model.eval()
    with torch.no_grad():
        out = model(batch)
    assert out["logits"].shape == (2, 7) and not out["has_description"].any()
    assert torch.isfinite(out["logits"]).all()
