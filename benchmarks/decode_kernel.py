"""The ragged decode-attention kernel alone vs cuDNN SDPA, and a sweep of its launch settings (one H200).

    PYTHONPATH=. python3 benchmarks/decode_kernel.py --rows 512 --kv-len 1536

One layer's step: rows x 10 heads x 128, every row at kv_len (the uniform benchmark's case); GB/s counts the
K/V bytes read (fp8: one byte an entry plus the scales).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from benchmarks.common import cuda_ms  # noqa: E402
from dsocr_model.modeling import decode_attention as da  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=512)
    ap.add_argument("--kv-len", type=int, default=1536)
    args = ap.parse_args()
    B, H, S, D = args.rows, 10, args.kv_len, 128
    q = torch.randn(B, H, 1, D, device="cuda", dtype=torch.bfloat16)
    k, v = (torch.randn(B, H, S, D, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    (kq, ks), (vq, vs) = da.quantize(k), da.quantize(v)
    lengths = torch.full((B,), S, device="cuda", dtype=torch.int32)
    mask = torch.ones(B, 1, 1, S, device="cuda", dtype=torch.bool)
    gb = {"bf16": 2 * B * H * S * D * 2 / 1e9, "fp8": 2 * B * H * S * (D + 4) / 1e9}  # GB / ms = TB/s
    ms = cuda_ms(lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=mask))
    print(f"{torch.cuda.get_device_name()} | rows {B}, kv_len {S}: cuDNN SDPA (masked, bf16) {ms:.3f} ms = "
          f"{gb['bf16'] / ms:,.2f} TB/s", flush=True)
    for kind in ("bf16", "fp8"):
        scales = (ks, vs) if kind == "fp8" else (None, None)
        keys = (kq, vq) if kind == "fp8" else (k, v)
        best = None
        for block in (32, 64, 128):
            for warps in (2, 4, 8):
                da.NUM_WARPS = warps
                ms = cuda_ms(lambda: da.decode_attention(q, *keys, lengths, S, *scales, block=block))
                best = min(best or (ms, block, warps), (ms, block, warps))
                print(f"  {kind} block {block:3d} warps {warps}: {ms:.3f} ms = {gb[kind] / ms:,.2f} TB/s", flush=True)
        print(f"  {kind} best: block {best[1]}, warps {best[2]}: {best[0]:.3f} ms", flush=True)


if __name__ == "__main__":
    main()
