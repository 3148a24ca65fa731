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


def build_tiny_llava(out_dir: Path, seed: int = 0) -> Path:
    """Write config, safetensors weights, tokenizer and processor of a ~0.4M-parameter LLaVA."""
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

    hf_logging.disable_progress_bar()
    torch.manual_seed(seed)
    tk = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.train_from_iterator(_corpus(), trainers.WordLevelTrainer(special_tokens=SPECIAL_TOKENS, min_frequency=1))
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, unk_token="<unk>", pad_token="<pad>", bos_token="<s>", eos_token="</s>",
        extra_special_tokens={"image_token": "<image>"},
    )
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    )
    processor = LlavaProcessor(
        image_processor=image_processor, tokenizer=tok, patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default", num_additional_image_tokens=1, image_token="<image>",
        chat_template=CHAT_TEMPLATE,
    )
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            image_size=IMAGE_SIZE, patch_size=PATCH_SIZE, projection_dim=32,
        ),
        # head_dim 64: the smallest head size vLLM's CPU attention accepts.
        text_config=LlamaConfig(
            vocab_size=len(tok), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
            num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
            pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        ),
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default", vision_feature_layer=-1,
    )
    model = LlavaForConditionalGeneration(config).eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    processor.save_pretrained(out_dir)
    _rename_for_vllm(out_dir / "model.safetensors")
    (out_dir / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    (out_dir / "FINECLIP_RANDOM_WEIGHTS.json").write_text(json.dumps({
        "note": "random weights: every text this model writes is meaningless",
        "version": TINY_VERSION, "seed": seed,
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
