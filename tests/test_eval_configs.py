"""Paper-setting presets: every one loads, and each ablation differs from its base in exactly its row's keys."""

import pytest

from finetrain.config import load_config, preset_names
from finetrain.train.zeroshot import zero_shot_config

PAPER = [f"{d}-{b}" for d in ("dfew", "ferv39k", "mafw") for b in ("b16", "l14")]
ABLATIONS = {
    "ablation-no-middle": {("model", "streams"): ["frames", "description"]},
    "ablation-no-descriptions": {("model", "streams"): ["frames", "parsing", "landmarks"],
                                 ("loss", "description"): 0.0},
    "ablation-no-negative": {("loss", "negative"): 0.0},
    "ablation-fixed-fusion": {("model", "fusion"): "fixed",
                              ("model", "fusion_weights"): [3.0, 1.0, 1.0, 1.0]},
    "ablation-low-only": {("model", "streams"): ["frames"], ("loss", "description"): 0.0},
}


def _flat(cfg) -> dict:
    return {(s, k): v for s, section in cfg.to_dict().items() for k, v in section.items()}


def _diff(a, b) -> dict:
    fa, fb = _flat(a), _flat(b)
    return {key: fb[key] for key in fa if fa[key] != fb[key]}


def test_every_paper_setting_is_a_preset():
    names = set(preset_names())
    assert set(PAPER) | set(ABLATIONS) | {"mafw-zeroshot-b16"} <= names


@pytest.mark.parametrize("name", PAPER)
def test_paper_presets(name):
    cfg = load_config(name)
    assert cfg.model.backbone == {"b16": "ViT-B-16", "l14": "ViT-L-14"}[name[-3:]]
    assert cfg.model.pretrained == "openai" and cfg.model.adapter_scale == 0.5  # the paper's best s
    assert cfg.model.streams == ["frames", "parsing", "landmarks", "description"]  # the paper's inputs
    assert cfg.data.frames == 16 and cfg.run.select_metric == "uar"
    # the backbone is the only difference between the two sizes, apart from what its width dictates
    other = load_config(name[:-3] + ("l14" if name.endswith("b16") else "b16"))
    allowed = {("model", k) for k in ("backbone", "adapter_ratio", "middle_adapter_ratio", "text_adapter_ratio",
                                      "temporal_heads")} | \
        {("optim", k) for k in ("batch_size", "accumulate", "lr", "warmup_steps")} | {("data", "num_workers")}
    assert set(_diff(cfg, other)) <= allowed


@pytest.mark.parametrize("name", sorted(ABLATIONS))
def test_ablation_changes_only_its_row(name):
    assert _diff(load_config("dfew-b16"), load_config(name)) == ABLATIONS[name]


def test_zero_shot_preset_is_label_free():
    cfg = load_config("mafw-zeroshot-b16")
    assert cfg.loss.ce == 0 and cfg.loss.negative == 0 and cfg.data.val_fraction == 0
    assert "description" not in cfg.model.streams
    # what --mode zero-shot does to any config leaves this preset as it is
    assert zero_shot_config(cfg).to_dict() == cfg.to_dict()
    turned = zero_shot_config(load_config("mafw-b16"))
    assert turned.loss.ce == 0 and turned.loss.negative == 0 and turned.model.streams == ["frames", "parsing", "landmarks"]
