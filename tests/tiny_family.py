"""Tiny random checkpoints of the three families in the official key layout, and the transformers 5.24
ports (an independent implementation) loaded from the very same safetensors file (FAMILY.md §4).

Each checkpoint directory holds a hub-style `config.json` (what dsocr reads), `model.safetensors` in the
official key names, and the golden tokenizer. The transformers oracle gets a sibling directory with the
port's native config and a link to the same weights; the port maps the official names itself.
Pixel geometry stays real (1024 global view, 640/768 tiles: the query tables and CLIP's position table are
fixed by it); only widths and depths shrink.
"""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import torch

from conftest import GOLDEN, tiny_config_dict

FAMILIES = ("deepseek-ocr", "deepseek-ocr-2", "unlimited-ocr")
TINY_WINDOW = 4  # Unlimited-OCR's R-SWA window in the tiny config: 24 generated tokens wrap the ring 6 times
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
ENCODER = {"dim": 48, "layers": 2, "heads": 4, "kv_heads": 2, "intermediate_size": 96}


def hub_config(family: str) -> dict:
    """The family's config.json in the official (remote-code) schema, at tiny size."""
    cfg = tiny_config_dict()
    if family == "unlimited-ocr":
        cfg.update(architectures=["UnlimitedOCRForCausalLM"], model_type="unlimited-ocr", max_position_embeddings=32768,
                   sliding_window=TINY_WINDOW, sliding_window_size=TINY_WINDOW)
        cfg["language_config"].update(max_position_embeddings=32768, sliding_window_size=TINY_WINDOW)
    elif family == "deepseek-ocr-2":
        cfg.update(architectures=["DeepseekOCR2ForCausalLM"])
        vision = cfg["vision_config"]
        vision["model_name"] = "deepencoderv2"
        del vision["width"]["clip-l-14-224"]
        vision["width"]["qwen2-0-5b"] = dict(ENCODER)  # beyond `dim`: our extension for tiny sizes
        cfg["projector_config"]["input_dim"] = ENCODER["dim"]
    return cfg


def _randomize(model: torch.nn.Module, seed: int) -> None:
    """Weights large enough that logits spread (greedy choices are not near ties), norms around 1."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if p.dim() == 1 and ("norm" in name or name.endswith(("layer_norm1.weight", "layer_norm2.weight"))):
            p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
        elif p.dim() == 1:
            p.copy_(0.05 * torch.randn(p.shape, generator=g))
        else:
            fan_in = math.prod(p.shape[1:]) if p.dim() > 1 else 1
            std = 1.0 if "embed_tokens" in name else 0.1 if ("pos" in name or "query_" in name) else fan_in ** -0.5
            p.copy_(std * torch.randn(p.shape, generator=g))


def write_checkpoint(family: str, folder: Path, seed: int = 0) -> Path:
    """config.json + model.safetensors (official names) + tokenizer in `folder`; returns it."""
    from safetensors.torch import save_file

    from dsocr_model import DeepseekOCR

    folder.mkdir(parents=True, exist_ok=True)
    cfg = hub_config(family)
    model = DeepseekOCR.from_config(cfg, device="cpu", dtype=torch.float32)
    with torch.no_grad():
        _randomize(model, seed)
    state = {k: v.detach().clone().contiguous() for k, v in model.to_checkpoint(model.state_dict()).items()}
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(cfg, indent=1), encoding="utf-8")
    for name in TOKENIZER_FILES:
        shutil.copy(GOLDEN / name, folder / name)
    return folder


def _text_config(cfg: dict, **extra) -> dict:
    keys = ("vocab_size", "hidden_size", "intermediate_size", "moe_intermediate_size", "num_hidden_layers",
            "num_attention_heads", "num_key_value_heads", "n_routed_experts", "n_shared_experts",
            "num_experts_per_tok", "max_position_embeddings", "bos_token_id", "eos_token_id", "topk_method",
            "n_group", "topk_group")
    text = {k: cfg[k] for k in keys}
    n = cfg["num_hidden_layers"]
    text.update(mlp_layer_types=["dense"] + ["sparse"] * (n - 1), rms_norm_eps=1e-6, routed_scaling_factor=1.0,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0}, **extra)
    return text


def _sam_config(cfg: dict, last_channels: int) -> dict:
    sam = cfg["vision_config"]["width"]["sam_vit_b"]
    return {"hidden_size": sam["width"], "num_hidden_layers": sam["layers"], "num_attention_heads": sam["heads"],
            "global_attn_indexes": sam["global_attn_indexes"], "mlp_dim": 4 * sam["width"], "output_channels": 256,
            "downsample_channels": [sam["downsample_channels"][0], last_channels], "window_size": 14,
            "image_size": 1024, "patch_size": 16}


def native_config(family: str) -> dict:
    """The transformers port's own config for the same tiny model."""
    cfg = hub_config(family)
    if family == "deepseek-ocr-2":
        enc = ENCODER
        encoder = {"hidden_size": enc["dim"], "num_hidden_layers": enc["layers"], "num_attention_heads": enc["heads"],
                   "num_key_value_heads": enc["kv_heads"], "intermediate_size": enc["intermediate_size"],
                   "rms_norm_eps": 1e-6, "vocab_size": 1, "max_position_embeddings": 1024,
                   "rope_parameters": {"rope_type": "default", "rope_theta": 1_000_000.0}}
        return {"model_type": "deepseek_ocr2", "architectures": ["DeepseekOcr2ForConditionalGeneration"],
                "vision_config": {"sam_config": _sam_config(cfg, enc["dim"]), "encoder_config": encoder},
                "text_config": _text_config(cfg), "image_token_id": cfg["image_token_id"], "torch_dtype": "float32"}
    if family == "unlimited-ocr":
        clip = cfg["vision_config"]["width"]["clip-l-14-224"]
        encoder = {"hidden_size": clip["width"], "intermediate_size": 4 * clip["width"],
                   "num_hidden_layers": clip["layers"], "num_attention_heads": clip["heads"],
                   "image_size": clip["image_size"], "patch_size": clip["patch_size"]}
        sam = _sam_config(cfg, cfg["vision_config"]["width"]["sam_vit_b"]["downsample_channels"][1])
        return {"model_type": "unlimited_ocr", "architectures": ["UnlimitedOcrForConditionalGeneration"],
                "vision_config": {"sam_config": sam, "encoder_config": encoder},
                "text_config": _text_config(cfg, sliding_window=TINY_WINDOW),
                "image_token_id": cfg["image_token_id"], "torch_dtype": "float32"}
    raise ValueError(f"transformers ports no {family} (v1 is proven against tests/data/golden)")


def load_port(family: str, checkpoint: Path):
    """The transformers port of `family` on the weights of `checkpoint` (fp32, CPU), and its loading report."""
    import transformers

    folder = checkpoint.parent / f"{checkpoint.name}-transformers"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps(native_config(family), indent=1), encoding="utf-8")
    link = folder / "model.safetensors"
    if not link.exists():
        link.symlink_to((checkpoint / "model.safetensors").resolve())
    cls = {"deepseek-ocr-2": transformers.DeepseekOcr2ForConditionalGeneration,
           "unlimited-ocr": transformers.UnlimitedOcrForConditionalGeneration}[family]
    model, info = cls.from_pretrained(str(folder), dtype=torch.float32, output_loading_info=True)
    return model.eval(), info


def port_inputs(family: str, views, ids: torch.Tensor) -> dict:
    """Our ImageViews as the ports' keyword arguments. The attention mask is explicit: generate() would
    otherwise derive one from a pad id, and BOS is id 0."""
    ids = ids.view(1, -1)
    kw = {"input_ids": ids, "attention_mask": torch.ones_like(ids),
          "pixel_values": torch.stack([v.global_view for v in views])}
    tiled = [v for v in views if v.is_tiled]
    if tiled:
        kw.update(pixel_values_local=torch.cat([v.tiles for v in tiled]), num_local_patches=[v.tiles.shape[0] for v in views])
        if family == "unlimited-ocr":
            kw["patches_grid"] = [list(v.grid) for v in views]
    return kw

