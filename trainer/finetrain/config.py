"""Training configuration: typed dataclasses, YAML files and `section.key=value` overrides.

A config is loaded from a named preset (`trainer/finetrain/configs/NAME.yaml`) or a YAML file, then
overridden from the command line. Every key must exist in the dataclasses below: a typo is refused
in one line instead of being silently ignored.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import types
import typing
from dataclasses import asdict, dataclass, field, fields
from importlib import resources
from pathlib import Path

import yaml

from .errors import FinetrainError


class ConfigError(FinetrainError, ValueError):
    """A config that cannot be used; the message names the key or file."""


@dataclass
class ModelConfig:
    backbone: str = "ViT-B-16"          # any open_clip model name (or one in finetrain/model_configs)
    pretrained: str | None = "openai"   # an open_clip pretrained tag, a local checkpoint path, or null
    streams: list[str] = field(default_factory=lambda: ["frames", "parsing", "landmarks", "blendshapes", "description"])
    adapter_ratio: float = 0.125        # adapter bottleneck width / transformer width (vision and text)
    adapter_scale: float = 0.5          # scale of the adapter parallel to the MLP
    text_adapters: bool = True          # positive / negative / description adapter sets in the text encoder
    temporal_layers: int = 1
    temporal_heads: int = 8
    temporal_mlp_ratio: float = 2.0
    temporal_dropout: float = 0.0
    blendshape_hidden: int = 256
    fusion: str = "learned"             # learned | fixed
    fusion_weights: list[float] | None = None  # fixed weights, one per stream (fusion=fixed)
    descriptors: str | None = None      # a label-descriptor YAML replacing prompts/descriptors.yaml
    weights_origin: str = "auto"        # auto | openai | other: OpenAI's weights need QuickGELU (backbone.py)
    middle_adapter_ratio: float | None = None  # parsing / landmark adapter sets (None: adapter_ratio)
    text_adapter_ratio: float | None = None    # positive / negative / description sets (None: adapter_ratio)
    shared_temporal_head: bool = False  # one temporal head for all visual streams instead of one each
    grad_checkpointing: bool = False    # recompute adapted blocks in backward (less memory, ~1/3 more compute)
    frozen_dtype: str = "auto"          # auto (bf16 when the run autocasts to bf16) | float32 | bfloat16
    compile: bool = False               # torch.compile the two CLIP towers
    missing_streams: str = "refuse"     # refuse | drop: a stream the store cannot feed stops the run, or is
                                        # dropped (recorded in run.json, test.json and the report)


@dataclass
class DataConfig:
    frames: int | None = None           # frames per clip fed to the model, one per segment of the stored
                                        # ones (random in training, centres otherwise); None: all stored
    crop_scale: list[float] = field(default_factory=lambda: [0.8, 1.0])  # random crop area range
    flip: bool = True
    jitter: float = 0.3                 # brightness / contrast / saturation jitter strength (0 = off)
    landmark_radius: int = 1            # dot radius in pixels at the model's input size
    overlay_alpha: float = 0.5          # parsing colour overlay opacity
    val_fraction: float = 0.1
    num_workers: int = 2
    description_words: int = 60         # descriptions are cut to this many words before tokenising
    random_descriptions: bool = False   # also use descriptions from random-weight models (plumbing runs only)
    descriptions_model: str | None = None   # which describer's texts to train on; needed when the store has several
    descriptions_prompt: str | None = None  # which prompt id (or hash) of that model; needed when it has several


@dataclass
class LossConfig:
    logit_scale: float = 100.0          # multiplies cosine similarities (CLIP's trained value)
    ce: float = 1.0                     # weight of cross-entropy over positive descriptors
    negative: float = 1.0               # weight of the true-class negative-descriptor term
    description: float = 0.5            # weight of the video-description contrastive term
    label_smoothing: float = 0.0
    infer_negative: float = 0.0         # logits = s(v, pos) - infer_negative * s(v, neg) at prediction
    infer_negative_grid: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 1.0, 2.0])
    # weights tried on validation when loss.negative > 0; the best replaces infer_negative (empty: keep it)


@dataclass
class OptimConfig:
    epochs: int = 30
    batch_size: int = 16                # per process
    accumulate: int = 1
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 100
    min_lr_ratio: float = 0.01
    grad_clip: float = 1.0
    amp: str = "auto"                   # auto (bf16 on GPU) | bf16 | off


@dataclass
class RunConfig:
    seed: int = 0
    fold: int = 1
    device: str = "auto"                # auto | cpu | cuda | cuda:N
    select_metric: str = "uar"          # uar | war: validation metric that picks the checkpoint
    eval_every: int = 1                 # epochs between validations
    checkpoint_every: int = 0           # also checkpoint every N optimiser steps (0: per epoch only)
    max_steps: int = 0                  # stop after N optimiser steps (0: run all epochs)
    threads: int = 0                    # torch.set_num_threads (0: leave torch's default)
    strict_protocol: bool = False       # refuse a fold whose listed test clips cannot all be scored
    logger: str = "tensorboard"         # tensorboard | wandb (offline) | none: curves beside metrics.jsonl


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def dump(self, path: Path) -> None:
        """Write the config as YAML, whole or not at all (a resumed run reads it back)."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False), encoding="utf-8")
        os.replace(tmp, path)


SECTIONS = {f.name: f.type for f in fields(Config)}


def preset_names() -> list[str]:
    folder = resources.files("finetrain").joinpath("configs")
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def _coerce(value, hint, key: str):
    """Check a YAML value against a field's type hint; ints become floats where floats are wanted."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{key}: bad value {value!r}")
    if origin is list:
        (inner,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(f"config key {key!r} wants a list, got {value!r}")
        return [_coerce(v, inner, key) for v in value]
    if hint is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):  # YAML 1.1 reads `5e-4` (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint is bool and isinstance(value, bool):
        return value
    if hint is str and isinstance(value, str):
        return value
    raise ConfigError(f"config key {key!r} wants {getattr(hint, '__name__', hint)}, got {value!r}")


def _section_hints(section: str) -> dict:
    cls = {f.name: f for f in fields(Config)}[section].default_factory().__class__
    return typing.get_type_hints(cls)


def apply(cfg: Config, data: dict, source: str) -> Config:
    """Apply a nested dict `{section: {key: value}}` onto `cfg`, refusing unknown sections and keys."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a config must be a mapping of sections, got {type(data).__name__}")
    for section, values in data.items():
        if section not in SECTIONS:
            raise ConfigError(f"{source}: unknown config section {section!r}; known: {', '.join(SECTIONS)}")
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: section {section!r} must be a mapping")
        hints = _section_hints(section)
        target = getattr(cfg, section)
        for key, value in values.items():
            if key not in hints:
                raise ConfigError(
                    f"{source}: unknown config key '{section}.{key}'; known in {section}: {', '.join(hints)}"
                )
            setattr(target, key, _coerce(value, hints[key], f"{section}.{key}"))
    return cfg


def parse_override(text: str) -> dict:
    """`optim.lr=3e-4` -> {"optim": {"lr": 0.0003}}; the value is parsed as YAML (lists, null, bools)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form section.key=value")
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    if len(parts) != 2 or not all(parts):
        raise ConfigError(f"override key {key!r} must be section.key (e.g. optim.lr=1e-4)")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({exc.problem})") from None
    return {parts[0]: {parts[1]: value}}


def _read_yaml(path, source: str) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML ({exc})") from None
    return data


def load_config(config: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """A preset name (`default`, `tiny`), a YAML path, or None for `default`; then overrides."""
    cfg = Config()
    name = str(config) if config is not None else "default"
    path = Path(name)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        apply(cfg, _read_yaml(path, str(path)), str(path))
    else:
        folder = resources.files("finetrain").joinpath("configs")
        preset = folder.joinpath(f"{name}.yaml")
        if not preset.is_file():
            raise ConfigError(f"unknown config {name!r}: not a file, and presets are {', '.join(preset_names())}")
        apply(cfg, _read_yaml(preset, f"preset {name}"), f"preset {name}")
    for text in overrides:
        apply(cfg, parse_override(text), f"override {text!r}")
    validate(cfg)
    return cfg


def from_dict(data: dict) -> Config:
    """Rebuild a config saved with `to_dict` (checkpoints, run folders)."""
    cfg = apply(Config(), data, "saved config")
    validate(cfg)
    return cfg


KNOWN_STREAMS = ("frames", "parsing", "landmarks", "blendshapes", "description")


def validate(cfg: Config) -> None:
    m = cfg.model
    if not m.streams:
        raise ConfigError("model.streams is empty; name at least one of " + ", ".join(KNOWN_STREAMS))
    for s in m.streams:
        if s not in KNOWN_STREAMS:
            raise ConfigError(f"model.streams: unknown stream {s!r}; known: {', '.join(KNOWN_STREAMS)}")
    if len(set(m.streams)) != len(m.streams):
        raise ConfigError(f"model.streams lists a stream twice: {m.streams}")
    if m.fusion not in ("learned", "fixed"):
        raise ConfigError(f"model.fusion must be learned or fixed, got {m.fusion!r}")
    if m.fusion == "fixed" and m.fusion_weights is not None and len(m.fusion_weights) != len(m.streams):
        raise ConfigError(
            f"model.fusion_weights has {len(m.fusion_weights)} values for {len(m.streams)} streams {m.streams}"
        )
    if m.frozen_dtype not in ("auto", "float32", "bfloat16"):
        raise ConfigError(f"model.frozen_dtype must be auto, float32 or bfloat16, got {m.frozen_dtype!r}")
    if m.weights_origin not in ("auto", "openai", "other"):
        raise ConfigError(f"model.weights_origin must be auto, openai or other, got {m.weights_origin!r}")
    for key in ("middle_adapter_ratio", "text_adapter_ratio"):
        if getattr(m, key) is not None and not getattr(m, key) > 0:
            raise ConfigError(f"model.{key} must be above 0 (or null), got {getattr(m, key)}")
    if any(not w >= 0 for w in cfg.loss.infer_negative_grid):
        raise ConfigError(f"loss.infer_negative_grid must hold numbers >= 0, got {cfg.loss.infer_negative_grid}")
    if cfg.run.logger not in ("tensorboard", "wandb", "none"):
        raise ConfigError(f"run.logger must be tensorboard, wandb or none, got {cfg.run.logger!r}")
    if m.missing_streams not in ("refuse", "drop"):
        raise ConfigError(f"model.missing_streams must be refuse or drop, got {m.missing_streams!r}")
    if cfg.optim.amp not in ("auto", "bf16", "off"):
        raise ConfigError(f"optim.amp must be auto, bf16 or off, got {cfg.optim.amp!r}")
    if cfg.run.select_metric not in ("uar", "war"):
        raise ConfigError(f"run.select_metric must be uar or war, got {cfg.run.select_metric!r}")
    if not 0.0 <= cfg.data.val_fraction < 1.0:
        raise ConfigError(f"data.val_fraction must be in [0, 1), got {cfg.data.val_fraction}")
    lo, hi = (cfg.data.crop_scale + [None, None])[:2]
    if len(cfg.data.crop_scale) != 2 or not 0 < lo <= hi <= 1:
        raise ConfigError(f"data.crop_scale must be [low, high] with 0 < low <= high <= 1, got {cfg.data.crop_scale}")
    _check_numbers(cfg)


# (key, lowest, highest, lowest allowed itself, highest allowed itself); None: no bound on that side
NUMBER_RULES: tuple[tuple[str, float | None, float | None, bool, bool], ...] = (
    ("model.adapter_ratio", 0, None, False, True),
    ("model.adapter_scale", None, None, True, True),  # any finite number
    ("model.temporal_layers", 0, None, True, True),
    ("model.temporal_heads", 1, None, True, True),
    ("model.temporal_mlp_ratio", 0, None, False, True),
    ("model.temporal_dropout", 0, 1, True, False),
    ("model.blendshape_hidden", 1, None, True, True),
    ("data.frames", 1, None, True, True),
    ("data.jitter", 0, None, True, True),
    ("data.landmark_radius", 0, None, True, True),
    ("data.overlay_alpha", 0, 1, True, True),
    ("data.num_workers", 0, None, True, True),
    ("data.description_words", 1, None, True, True),
    ("loss.logit_scale", 0, None, False, True),
    ("loss.ce", 0, None, True, True),
    ("loss.negative", 0, None, True, True),
    ("loss.description", 0, None, True, True),
    ("loss.label_smoothing", 0, 1, True, False),
    ("loss.infer_negative", 0, None, True, True),
    ("optim.epochs", 1, None, True, True),
    ("optim.batch_size", 1, None, True, True),
    ("optim.accumulate", 1, None, True, True),
    ("optim.lr", 0, None, False, True),
    ("optim.weight_decay", 0, None, True, True),
    ("optim.warmup_steps", 0, None, True, True),
    ("optim.min_lr_ratio", 0, 1, True, True),
    ("optim.grad_clip", 0, None, True, True),
    ("run.eval_every", 1, None, True, True),
    ("run.checkpoint_every", 0, None, True, True),
    ("run.max_steps", 0, None, True, True),
    ("run.threads", 0, None, True, True),
)


def _check_numbers(cfg: Config) -> None:
    """Refuse numbers no run can use (NaN, a negative learning rate, zero epochs) before anything is built,
    naming the key: such a value would otherwise surface as a NaN loss or an empty loop much later."""
    for key, low, high, low_ok, high_ok in NUMBER_RULES:
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if value is None:
            continue
        if not math.isfinite(value):
            raise ConfigError(f"config key {key!r} must be a finite number, got {value}")
        too_low = low is not None and (value < low or (value == low and not low_ok))
        too_high = high is not None and (value > high or (value == high and not high_ok))
        if too_low or too_high:
            if low is not None and high is not None:
                want = f"in {'[' if low_ok else '('}{low}, {high}{']' if high_ok else ')'}"
            else:
                want = f"{'>=' if low_ok else '>'} {low}" if low is not None else f"{'<=' if high_ok else '<'} {high}"
            raise ConfigError(f"config key {key!r} must be {want}, got {value}")
    if cfg.model.fusion_weights is not None:
        for w in cfg.model.fusion_weights:
            if not math.isfinite(w) or w < 0:
                raise ConfigError(f"config key 'model.fusion_weights' must hold finite numbers >= 0, "
                                  f"got {cfg.model.fusion_weights}")


def replace(cfg: Config, **sections) -> Config:
    """A copy of `cfg` with some sections' fields replaced: replace(cfg, optim={"lr": 1e-4})."""
    new = from_dict(cfg.to_dict())
    for section, values in sections.items():
        for key, value in values.items():
            setattr(getattr(new, section), key, value)
    return dataclasses.replace(new)
