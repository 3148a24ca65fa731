"""The paper's model, exactly: QuickGELU for OpenAI weights, the paper's streams in the paper's configs,
float32 similarities under autocast, a negative-descriptor loss that needs learning, mirrored blendshapes
under flip, gradient checkpointing that keeps each adapter set, and the tunable-parameter budget."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from toy_store import write_toy_store

from fineschema.labels import BASIC7
from fineschema.layout import BLENDSHAPE_NAMES
from finetrain.config import DataConfig, load_config, preset_names
from finetrain.data.store import StoreDataset, StoreInfo, mirrored_blendshapes
from finetrain.model.backbone import BackboneError, create_clip, uses_quick_gelu, weights_need_quick_gelu
from finetrain.model.losses import compute_loss, negative_loss
from finetrain.model.model import PAPER_STREAMS, PAPER_VARIANTS, build_model, similarity, variant_parameters

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _batch(model, b: int = 4, t: int = 4, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    size = model.image_size
    batch = {s: torch.randint(0, 256, (b, t, 3, size, size), dtype=torch.uint8, generator=g)
             for s in ("frames", "parsing", "landmarks") if s in model.streams}
    batch["blendshapes"] = torch.rand(b, t, 52, generator=g)
    texts = ["the mouth corners rise", "brows pulled down", "eyes wide open", "lips pressed"][:b]
    batch["description"] = model.tokenizer(texts)
    batch["has_description"] = torch.ones(b, dtype=torch.bool)
    batch["label"] = torch.arange(b) % len(model.labels)
    return batch


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return build_model(load_config("tiny"), BASIC7, 4)


# --- 1. QuickGELU -------------------------------------------------------------------------------------

@pytest.mark.parametrize("backbone", ["ViT-B-16", "ViT-L-14"])
def test_a_model_for_openai_weights_has_quick_gelu_in_both_towers(backbone):
    with torch.device("meta"):  # the real architecture, without memory or a download
        clip, _ = create_clip(backbone, None, weights_origin="openai")
        plain, _ = create_clip(backbone, None, weights_origin="other")
    assert uses_quick_gelu(clip.visual) and uses_quick_gelu(clip.transformer)
    assert not uses_quick_gelu(plain.visual) and not uses_quick_gelu(plain.transformer)  # open_clip's default


def test_every_config_with_openai_weights_resolves_to_quick_gelu():
    for name in preset_names():
        m = load_config(name).model
        if m.pretrained == "openai":
            assert weights_need_quick_gelu(m.backbone, m.pretrained, m.weights_origin) is True, name


def test_weights_origin_rules(tmp_path):
    assert weights_need_quick_gelu("ViT-B-16", "openai") is True
    assert weights_need_quick_gelu("ViT-B-16", "laion2b_s34b_b88k") is False
    assert weights_need_quick_gelu("ViT-B-16", None) is None
    ours = tmp_path / "ViT-B-16.pt"  # the file name OpenAI's release downloads as
    unknown = tmp_path / "clip.safetensors"
    for path in (ours, unknown):
        path.write_bytes(b"")
    assert weights_need_quick_gelu("ViT-B-16", str(ours)) is True
    assert weights_need_quick_gelu("ViT-B-16", str(unknown), "openai") is True
    assert weights_need_quick_gelu("ViT-B-16", str(unknown), "other") is False
    with pytest.raises(BackboneError, match="weights_origin"):  # a local file of unknown origin
        weights_need_quick_gelu("ViT-B-16", str(unknown))
    with pytest.raises(BackboneError, match="contradicts"):
        weights_need_quick_gelu("ViT-B-16", "laion2b_s34b_b88k", "openai")
    with pytest.raises(BackboneError, match="trained with GELU"):  # a known mismatch is refused
        create_clip("ViT-B-16-quickgelu", str(unknown), weights_origin="other")


# --- 2. the paper's streams ---------------------------------------------------------------------------

def test_paper_configs_use_only_the_paper_streams():
    names = preset_names()
    for name in names:
        if name == "tiny":
            continue
        cfg = load_config(name)
        if name.endswith("-plus"):  # our additions live here, one stream away from the paper config
            base = load_config(name.removesuffix("-plus"))
            assert cfg.model.streams == [*base.model.streams[:3], "blendshapes", *base.model.streams[3:]]
            cfg.model.streams = base.model.streams
            assert cfg.to_dict() == base.to_dict(), name
        else:
            assert set(cfg.model.streams) <= set(PAPER_STREAMS), (name, cfg.model.streams)
    assert {"dfew-b16-plus", "ferv39k-b16-plus", "mafw-b16-plus"} <= set(names)
    assert load_config("mafw-zeroshot-b16").model.streams == ["frames"]  # FineCLIPER†: frames and text


def test_flip_swaps_left_and_right_blendshapes():
    index = mirrored_blendshapes()
    pairs = 0
    for i, name in enumerate(BLENDSHAPE_NAMES):
        other = BLENDSHAPE_NAMES[index[i]]
        if name.endswith("Left"):
            assert other == name[:-4] + "Right"
            pairs += 1
        elif name.endswith("Right"):
            assert other == name[:-5] + "Left"
        else:
            assert other == name
    assert pairs == 20 and (index[index] == np.arange(52)).all()


def test_dataset_mirrors_blendshapes_with_the_image(tmp_path):
    root = write_toy_store(tmp_path / "store", clips_per_class=1, frames=3, size=32)
    info = StoreInfo.open(root)
    cfg = DataConfig(crop_scale=[1.0, 1.0], jitter=0.0, flip=True)
    streams = ("frames", "blendshapes")
    plain = StoreDataset(info, range(len(info)), image_size=32, data_cfg=cfg, streams=streams)
    seen = set()
    train = StoreDataset(info, range(len(info)), image_size=32, train=True, data_cfg=cfg, streams=streams)
    for epoch in range(2):
        train.set_epoch(epoch)
        for i in range(len(train)):
            got, ref = train[i], plain[i]
            flipped = torch.equal(got["frames"], ref["frames"].flip(-1))
            assert flipped or torch.equal(got["frames"], ref["frames"])
            want = ref["blendshapes"][..., mirrored_blendshapes()] if flipped else ref["blendshapes"]
            assert torch.equal(got["blendshapes"], want)
            seen.add(flipped)
    assert seen == {True, False}


# --- 3. float32 similarities, logits and losses -------------------------------------------------------

def test_similarities_logits_and_losses_are_float32_under_bf16_autocast(tiny):
    tiny.train()
    batch = _batch(tiny)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = tiny(batch)
        pos, neg = tiny.label_embeddings()
        loss, _ = compute_loss(out, batch["label"], tiny.cfg.loss)
    for key in ("video", "sim_pos", "sim_neg", "logits"):
        assert out[key].dtype == torch.float32, key
    assert loss.dtype == torch.float32
    exact = out["video"].double() @ pos.double().t()
    assert (out["sim_pos"].double() - exact).abs().max() < 1e-6
    # what bf16 would have given: steps of 2^-9 near 0.25, far coarser than the float32 result
    coarse = (out["video"].bfloat16() @ pos.bfloat16().t()).double()
    assert (coarse - exact).abs().max() > 1e-4
    assert torch.allclose(out["logits"], tiny.cfg.loss.logit_scale * out["sim_pos"], atol=0, rtol=0)
    assert similarity(out["video"].bfloat16(), neg.bfloat16()).dtype == torch.float32


# --- 4. the negative-descriptor loss ------------------------------------------------------------------

def test_negative_loss_is_log_c_when_negatives_move_away_uniformly():
    labels = torch.arange(7)
    for level in (0.3, -0.5, -1.0):
        sim_neg = torch.full((7, 7), level)
        assert negative_loss(sim_neg, labels, 100.0).item() == pytest.approx(math.log(7), abs=1e-6)
    # the true class's negative least similar: the loss falls below log C
    assert negative_loss(-torch.eye(7) * 0.1, labels, 100.0).item() < 0.01


def test_negative_adapters_alone_cannot_meet_the_negative_loss():
    """Video embeddings that carry no class (the same for every clip) and negative texts free to take any
    value (more than any adapter can do): the new loss stays at log C, the old pairwise one goes to 0."""
    torch.manual_seed(0)
    c, d, tau = 7, 16, 100.0
    video = F.normalize(torch.randn(1, d), dim=-1).expand(c * 4, d)
    labels = torch.arange(c).repeat(4)
    pos = F.normalize(torch.randn(c, d), dim=-1)
    results = {}
    for form in ("new", "old"):
        neg = torch.randn(c, d, requires_grad=True)
        opt = torch.optim.Adam([neg], lr=0.05)
        for _ in range(300):
            sim_neg = video @ F.normalize(neg, dim=-1).t()
            if form == "new":
                loss = negative_loss(sim_neg, labels, tau)
            else:
                idx = labels.view(-1, 1)
                loss = F.softplus(tau * (sim_neg.gather(1, idx) - (video @ pos.t()).gather(1, idx))).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        results[form] = loss.item()
    assert results["new"] >= math.log(c) - 1e-4
    assert results["old"] < 0.01


def test_no_negative_set_without_the_negative_loss():
    with_neg = build_model(load_config("tiny"), BASIC7, 4)
    without = build_model(load_config("tiny", ["loss.negative=0"]), BASIC7, 4)
    names = {n for n, p in without.named_parameters() if p.requires_grad}
    assert not any(".negative." in n for n in names)
    assert any(".negative." in n for n, _ in with_neg.named_parameters())
    out = without.eval()(_batch(without))
    assert "sim_neg" not in out


def test_negative_weight_is_chosen_on_validation():
    from finetrain.score.metrics import choose_negative_weight

    labels = np.array([0, 1, 2, 0, 1, 2])
    sim_pos = np.full((6, 3), 0.2)
    sim_neg = np.full((6, 3), 0.1)
    sim_neg[np.arange(6), labels] = 0.0  # only the negatives tell the classes apart
    w, table = choose_negative_weight(labels, sim_pos, sim_neg, [0.0, 0.5, 1.0])
    assert w == 0.5 and table[0.5] == (1.0, 1.0) and table[0.0][1] == pytest.approx(1 / 3)


# --- ready for one GPU --------------------------------------------------------------------------------

def test_gradients_equal_with_and_without_checkpointing(tiny):
    torch.manual_seed(1)
    with torch.no_grad():  # adapters away from their zero start, so every adapter tensor gets a gradient
        for name, p in tiny.named_parameters():
            if p.requires_grad and ".adapters." in name:
                p.add_(torch.randn_like(p) * 0.05)
    batch = _batch(tiny)
    grads = []
    for checkpointing in (False, True):
        tiny.train()
        tiny.set_grad_checkpointing(checkpointing)
        tiny.zero_grad(set_to_none=True)
        loss, _ = compute_loss(tiny(batch), batch["label"], tiny.cfg.loss)
        loss.backward()
        grads.append({n: p.grad.clone() for n, p in tiny.named_parameters() if p.requires_grad})
    tiny.set_grad_checkpointing(False)
    sets = {n.split(".adapters.")[1].split(".")[0] for n in grads[0] if ".adapters." in n}
    assert sets == {"frames", "parsing", "landmarks", "positive", "negative", "description"}
    for name, g in grads[0].items():
        assert torch.allclose(g, grads[1][name], atol=1e-6, rtol=1e-5), name
        if ".adapters." in name:
            assert g.abs().sum() > 0, name


@pytest.mark.slow
def test_compiled_towers_with_checkpointing_keep_the_gradients():
    """torch.compile traces the adapter switch and the checkpointed blocks (aot_eager: the graph capture
    and autograd of inductor's path, without its C++ build); gradients equal the eager ones."""
    torch.manual_seed(0)
    model = build_model(load_config("tiny"), BASIC7, 4).train()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad and ".adapters." in name:
                p.add_(torch.randn_like(p) * 0.05)
    batch = _batch(model)

    def grads():
        model.zero_grad(set_to_none=True)
        loss, _ = compute_loss(model(batch), batch["label"], model.cfg.loss)
        loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    eager = grads()
    model.compile_towers(backend="aot_eager")
    model.set_grad_checkpointing(True)
    compiled = grads()
    torch._dynamo.reset()
    for name, g in eager.items():
        assert torch.allclose(g, compiled[name], atol=1e-5, rtol=1e-4), name


def test_frozen_weights_in_bf16_keep_trainable_tensors_float32():
    model = build_model(load_config("tiny"), BASIC7, 4)
    model.cast_frozen(torch.bfloat16)
    for p in model.parameters():
        assert p.dtype == (torch.float32 if p.requires_grad else torch.bfloat16)
    batch = _batch(model)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model.train()(batch)
    loss, _ = compute_loss(out, batch["label"], model.cfg.loss)
    loss.backward()
    assert torch.isfinite(loss) and out["logits"].dtype == torch.float32


# --- 6. tunable parameters ----------------------------------------------------------------------------

def test_paper_configs_match_the_paper_parameter_budget():
    for name in ("dfew-b16", "dfew-l14"):
        counts = variant_parameters(load_config(name))
        for variant, (_, paper) in PAPER_VARIANTS.items():
            assert round(counts[variant] / 1e6) == paper, (name, variant, counts[variant])


@pytest.mark.slow
def test_gpu_bench_smoke_mode_runs_on_cpu(tmp_path):
    """bench/gpu.sh --smoke: the GPU script's code path (build, steps with and without checkpointing,
    FLOP count, JSON and Markdown) on the tiny config on CPU."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHON": sys.executable, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", str(root / "bench" / "gpu.sh"), "--smoke", str(tmp_path)], capture_output=True,
                          text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((tmp_path / "gpu_step.json").read_text())
    rows = {r["variant"]: r for r in result["results"]}
    assert set(rows) == {"plain", "checkpointing"} and result["device_name"] == "CPU"
    for row in rows.values():
        assert "error" not in row and row["clips_per_s"] > 0 and row["flops_per_step"] > 1e8
    assert rows["plain"]["flops_per_step"] == rows["checkpointing"]["flops_per_step"]
    table = (tmp_path / "gpu_step.md").read_text()
    assert "| plain |" in table and "| checkpointing |" in table
