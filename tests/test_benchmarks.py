"""Benchmarks must keep running: smoke them on CPU with the tiny config (not timed)."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_model_core_benchmark_smoke():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "model_core.py"), "--tiny", "--device", "cpu",
                          "--new-tokens", "4", "--repeats", "1"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "903 image tokens" in out.stdout
    _assert_positive_rates(out.stdout)


@pytest.mark.parametrize("family", ["v1", "unlimited", "ocr2"])
def test_throughput_benchmark_smoke(family):
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "throughput.py"), "--tiny", "--device", "cpu",
                          "--pages", "3", "--new-tokens", "3", "--max-batch", "2", "--baseline", "1", "--family", family],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "pages/s" in out.stdout and "speed-up" in out.stdout and "KV cache row per page" in out.stdout
    _assert_positive_rates(out.stdout)


def test_compression_study_benchmark_smoke():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "compression_study.py"), "--tiny", "--device", "cpu",
                          "--pages", "3", "--new-tokens", "4"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "3 pages at 12 px" in out.stdout
    _assert_positive_rates(out.stdout)


def test_remote_client_benchmark_smoke():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "remote_client.py"), "--pages", "4",
                          "--concurrency", "2"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    _assert_positive_rates(out.stdout)


def _assert_positive_rates(text: str) -> None:
    """Every printed rate is a positive number (a -1.7 tok/s once passed a smoke test that only ran)."""
    rates = [float(m) for m in re.findall(r"(-?[\d.]+) (?:decoded )?(?:tok/s|pages/s)", text)]
    assert rates and all(r > 0 for r in rates), rates
