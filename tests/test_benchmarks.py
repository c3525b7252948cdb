"""Benchmarks must keep running: smoke them on CPU with the tiny config (not timed)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_model_core_benchmark_smoke():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "model_core.py"), "--tiny", "--device", "cpu",
                          "--new-tokens", "4", "--repeats", "1"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "903 image tokens" in out.stdout and "tok/s" in out.stdout


def test_throughput_benchmark_smoke():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "throughput.py"), "--tiny", "--device", "cpu",
                          "--pages", "3", "--new-tokens", "3", "--max-batch", "2", "--baseline", "1"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "pages/s" in out.stdout and "speed-up" in out.stdout
