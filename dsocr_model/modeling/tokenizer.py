"""Tokenizer loading and prompt -> input ids (ARCHITECTURE.md §5.2-5.3).

The tokenizer comes from the model directory's `tokenizer.json` through transformers'
`PreTrainedTokenizerFast`, never `AutoTokenizer`: the official `config.json` carries an `auto_map`,
which makes AutoTokenizer ask for remote code. Special ids are read from the tokenizer.
"""
from __future__ import annotations

import logging
from pathlib import Path

logger = logging.getLogger(__name__)

IMAGE_TOKEN = "<image>"
OFFICIAL_IMAGE_TOKEN_ID = 128815


def load_tokenizer(model_dir: str | Path):
    from transformers import PreTrainedTokenizerFast

    model_dir = Path(model_dir)
    if not (model_dir / "tokenizer.json").is_file():
        raise FileNotFoundError(f"{model_dir} has no tokenizer.json; a DeepSeek-OCR model directory needs one")
    return PreTrainedTokenizerFast.from_pretrained(str(model_dir))


def token_id(tokenizer, token: str) -> int | None:
    """Id of a token the tokenizer knows as a whole, else None."""
    tid = tokenizer.convert_tokens_to_ids(token)
    if tid is None or (tokenizer.unk_token_id is not None and tid == tokenizer.unk_token_id):
        return None
    return int(tid)


def resolve_image_token_id(config_id: int | None, tokenizer) -> int:
    """config `image_token_id` if present, else the tokenizer's `<image>`, else the official 128815."""
    if config_id is not None:
        return int(config_id)
    tid = token_id(tokenizer, IMAGE_TOKEN) if tokenizer is not None else None
    return OFFICIAL_IMAGE_TOKEN_ID if tid is None else tid


def build_prompt_ids(tokenizer, prompt: str, image_token_counts: list[int], image_token_id: int,
                     bos_id: int) -> list[int]:
    """BOS + text pieces (no special tokens added) with each `<image>` expanded to its placeholders.

    The prompt is stripped first, as HF `infer()` does; no EOS and no role tags are added.
    """
    pieces = prompt.strip().split(IMAGE_TOKEN)
    if len(pieces) - 1 != len(image_token_counts):
        raise ValueError(f"prompt has {len(pieces) - 1} <image> tags but {len(image_token_counts)} images were given")
    ids = [bos_id]
    for i, piece in enumerate(pieces):
        if piece:
            ids += tokenizer.encode(piece, add_special_tokens=False)
        if i < len(image_token_counts):
            ids += [image_token_id] * image_token_counts[i]
    return ids
