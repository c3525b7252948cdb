"""Shared helpers for benchmarks: synthetic pages and a full-size random-weight model (no download)."""
from __future__ import annotations

import random
from pathlib import Path

import torch
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
OFFICIAL_CONFIG = ROOT / "tests" / "data" / "spec" / "official_config.json"
TINY_CONFIG = ROOT / "tests" / "data" / "golden" / "config.json"
FAMILY_CONFIGS = {"deepseek-ocr": OFFICIAL_CONFIG,
                  "deepseek-ocr-2": ROOT / "tests" / "data" / "spec" / "official_config_ocr2.json",
                  "unlimited-ocr": ROOT / "tests" / "data" / "spec" / "official_config_unlimited_ocr.json"}
FAMILY_ALIASES = {"v1": "deepseek-ocr", "ocr2": "deepseek-ocr-2", "unlimited": "unlimited-ocr"}
# "\n<|grounding|>Convert the document to markdown." has 11 ids in the real tokenizer; the exact ids do
# not change the cost, so fixed stand-ins below the special-token range are used.
PROMPT_TAIL = [201, 128820, 31008, 270, 3287, 304, 56066, 16, 1294, 9834, 13]


def synthetic_page(width: int = 1190, height: int = 1684, seed: int = 0) -> Image.Image:
    """An A4-at-144-dpi-sized page with text-like strokes (content does not affect the cost)."""
    rng = random.Random(seed)
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    y = 80
    while y < height - 80:
        x = 80
        while x < width - 120:
            w = rng.randint(20, 90)
            d.rectangle([x, y, x + w, y + 14], fill=(30, 30, 30))
            x += w + 12
        y += 30
    return img


def family_config(family: str, full_size: bool):
    """The official config of a family, or (tiny) the config the tests write for it."""
    family = FAMILY_ALIASES.get(family, family)
    if full_size:
        return FAMILY_CONFIGS[family]
    if family == "deepseek-ocr":
        return TINY_CONFIG
    import sys

    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_family import hub_config  # the tiny family configs live with the tests that prove them

    return hub_config(family)


def build_model(full_size: bool, device: str, dtype: torch.dtype, seed: int = 0, family: str = "deepseek-ocr"):
    from dsocr_model import DeepseekOCR

    cfg = family_config(family, full_size)
    model = DeepseekOCR.from_config(cfg, device=device, dtype=dtype, seed=seed)
    if full_size:  # tame random init so bf16 activations stay finite through 12 layers
        with torch.no_grad():
            for name, p in model.named_parameters():
                if p.dim() >= 2:
                    p.normal_(0.0, 0.02)
    return model


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1) of `values`, nearest rank."""
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def random_checkpoint(directory: str | Path, device: str = "cuda", family: str = "deepseek-ocr") -> Path:
    """A full-size checkpoint of random weights in the official layout, written once to `directory`, with the
    tests' small tokenizer: what the loaders, the server and the Ray job load by path (no download).

    The test tokenizer knows 1,024 ids, so lm_head rows past them (and EOS's) are zeroed: greedy picks among
    ids that decode to text and never stops early; the head's GEMM keeps its full 129,280-row cost.
    """
    import json
    import shutil

    from safetensors.torch import save_file

    directory = Path(directory)
    if (directory / "model.safetensors").exists():
        return directory
    directory.mkdir(parents=True, exist_ok=True)
    model = build_model(True, device, torch.bfloat16, family=family)
    with torch.no_grad():
        model.lm_head.weight[1024:] = 0
        model.lm_head.weight[model.eos_token_id] = 0
    state = {k: v.contiguous().cpu() for k, v in model.to_checkpoint(model.state_dict()).items()}
    save_file(state, str(directory / "model.safetensors"), metadata={"format": "pt"})
    config = json.loads(family_config(family, True).read_text())
    (directory / "config.json").write_text(json.dumps(config))
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(TINY_CONFIG.parent / name, directory / name)
    del model, state
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return directory


def cuda_ms(fn, iters: int = 20) -> float:
    """Milliseconds per call of fn on the GPU, event-timed after one warm-up call."""
    fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / iters
