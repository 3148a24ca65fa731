"""A tiny random-weight LLaVA, built locally once and cached, for smoke runs, tests and the demo.

No model hub is reachable from CI or the GPU machine, so this is how every engine (transformers,
in-process vLLM, `vllm serve`) gets a real checkpoint to load. The weights are random: whatever it
writes is meaningless text and every row it produces is marked `random_weights=True`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

# Bump when the build changes, so an old cache is not reused.
TINY_VERSION = "v1"
TINY_DIRNAME = f"tiny-random-llava-{TINY_VERSION}"
IMAGE_SIZE = 64
PATCH_SIZE = 16
TOKENS_PER_IMAGE = (IMAGE_SIZE // PATCH_SIZE) ** 2  # 16: CLS dropped by the "default" feature strategy

# A chat template in the processor's own files, so prompts come from `apply_chat_template` like
# for real checkpoints. It takes OpenAI-style content lists (image parts, then text).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] == 'user' %}USER: "
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' or part['type'] == 'image_url' %}<image>"
    "{% elif part['type'] == 'text' %}{{ '\\n' + part['text'] }}{% endif %}"
    "{% endfor %}{% endif %} "
    "{% elif message['role'] == 'assistant' %}ASSISTANT: {{ message['content'] }} "
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)

SPECIAL_TOKENS = ["<unk>", "<pad>", "<s>", "</s>", "<image>"]


def cache_root() -> Path:
    """`$FINECLIP_CACHE` when set, else `~/.cache/fineclip`."""
    env = os.environ.get("FINECLIP_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "fineclip"


def _corpus() -> list[str]:
    """Words for the word-level vocabulary: our instructions, lexicon words and facial vocabulary."""
    import fineprompts

    lines = [text for text, _ in (fineprompts.load_instruction(i) for i in fineprompts.instruction_ids())]
    lines.append("USER : ASSISTANT : describe the facial expression of the person in these frames")
    lines.append(
        "the mouth chin eyes eyebrows brows lips cheeks jaw nose forehead gaze head opens closes widens "
        "narrows raises lowers tightens relaxes presses blinks looks left right up down slightly "
        "breathing slow fast frame first last then while and with his her their is are a an of"
    )
    lex = fineprompts.load_lexicon()
    for words in lex.label_terms.values():
        lines.append(" ".join(words))
    return lines


def _rename_for_vllm(weights: Path) -> None:
    """transformers 5 saves the CLIP tower as `...vision_tower.<layers>`; vLLM's LLaVA loader wants
    `vision_tower.vision_model.<layers>`. transformers still loads the renamed file."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(weights))
    renamed = {}
    for key, value in tensors.items():
        prefix, sep, rest = key.partition("vision_tower.")
        if sep and not rest.startswith("vision_model."):
            key = f"{prefix}vision_tower.vision_model.{rest}"
        renamed[key] = value.contiguous()
    save_file(renamed, str(weights), metadata={"format": "pt"})


# Architectures, all built from local configs. `tiny` has weights (random, 0.4M parameters) and runs
# anywhere; the larger ones are configs only, for vLLM's `load_format="dummy"` on a GPU (bench/).
PRESETS: dict[str, dict] = {
    "tiny": {"image_size": IMAGE_SIZE, "patch_size": PATCH_SIZE, "vocab_size": None,
             "vision": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                        "num_attention_heads": 2, "projection_dim": 32},
             # head_dim 64: the smallest head size vLLM's CPU attention accepts.
             "text": {"hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
                      "num_attention_heads": 2, "num_key_value_heads": 2, "max_position_embeddings": 512}},
    "small": {"image_size": 224, "patch_size": 14, "vocab_size": 32064,
              "vision": {"hidden_size": 256, "intermediate_size": 1024, "num_hidden_layers": 4,
                         "num_attention_heads": 4, "projection_dim": 256},
              "text": {"hidden_size": 1024, "intermediate_size": 2816, "num_hidden_layers": 8,
                       "num_attention_heads": 16, "num_key_value_heads": 16, "max_position_embeddings": 4096}},
    # The shapes of llava-hf/llava-1.5-7b-hf: CLIP ViT-L/14-336 and a Vicuna-7B (Llama) decoder.
    "llava-1.5-7b": {"image_size": 336, "patch_size": 14, "vocab_size": 32064,
                     "vision": {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24,
                                "num_attention_heads": 16, "projection_dim": 768},
                     "text": {"hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
                              "num_attention_heads": 32, "num_key_value_heads": 32,
                              "max_position_embeddings": 4096},
                     "vision_feature_layer": -2},
}


def build_tiny_llava(out_dir: Path, seed: int = 0, preset: str = "tiny", weights: bool = True) -> Path:
    """Write config, tokenizer, processor (with chat template) and, when `weights`, random safetensors
    weights of a LLaVA in one of the PRESETS shapes."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerFast,
    )
    from transformers.utils import logging as hf_logging

    p = PRESETS[preset]
    hf_logging.disable_progress_bar()
    torch.manual_seed(seed)
    tk = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.train_from_iterator(_corpus(), trainers.WordLevelTrainer(special_tokens=SPECIAL_TOKENS, min_frequency=1))
    if p["vocab_size"] and tk.get_vocab_size() < p["vocab_size"]:
        # Filler words, so every id a full-size head can emit decodes to something.
        tk.add_tokens([f"w{i}" for i in range(p["vocab_size"] - tk.get_vocab_size())])
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, unk_token="<unk>", pad_token="<pad>", bos_token="<s>", eos_token="</s>",
        extra_special_tokens={"image_token": "<image>"},
    )
    size = p["image_size"]
    image_processor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    processor = LlavaProcessor(
        image_processor=image_processor, tokenizer=tok, patch_size=p["patch_size"],
        vision_feature_select_strategy="default", num_additional_image_tokens=1, image_token="<image>",
        chat_template=CHAT_TEMPLATE,
    )
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(image_size=size, patch_size=p["patch_size"], **p["vision"]),
        text_config=LlamaConfig(
            vocab_size=len(tok), pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id, **p["text"]),
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default", vision_feature_layer=p.get("vision_feature_layer", -1),
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    if weights:
        model = LlavaForConditionalGeneration(config).eval()
        model.save_pretrained(out_dir, safe_serialization=True)
        _rename_for_vllm(out_dir / "model.safetensors")
    else:
        config.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    (out_dir / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    (out_dir / "FINECLIP_RANDOM_WEIGHTS.json").write_text(json.dumps({
        "note": "random weights: every text this model writes is meaningless",
        "version": TINY_VERSION, "seed": seed, "preset": preset, "weights": weights,
    }))
    return out_dir


def tiny_llava_dir(cache: Path | None = None) -> Path:
    """Path of the cached tiny LLaVA, building it on first use (atomically: build aside, then rename)."""
    root = Path(cache) if cache else cache_root()
    target = root / TINY_DIRNAME
    if (target / "FINECLIP_RANDOM_WEIGHTS.json").exists():
        return target
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{TINY_DIRNAME}-", dir=root))
    try:
        build_tiny_llava(tmp)
        try:
            tmp.rename(target)
        except OSError:  # another process finished first
            if not (target / "FINECLIP_RANDOM_WEIGHTS.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
