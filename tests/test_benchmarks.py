"""Benchmarks must keep running: smoke them on CPU with the tiny config (not timed)."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(script: str, *args: str) -> str:
    """Run a benchmark; it must succeed and print only positive rates. Returns its output."""
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    _assert_positive_rates(out.stdout)
    return out.stdout


def test_model_core_benchmark_smoke():
    assert "903 image tokens" in _run("model_core.py", "--tiny", "--device", "cpu", "--new-tokens", "4", "--repeats", "1")


@pytest.mark.parametrize("family", ["v1", "unlimited", "ocr2"])
def test_throughput_benchmark_smoke(family):
    out = _run("throughput.py", "--tiny", "--device", "cpu", "--pages", "3", "--new-tokens", "3", "--max-batch", "2",
               "--baseline", "1", "--family", family)
    assert "pages/s" in out and "speed-up" in out and "KV cache row per page" in out


def test_compression_study_benchmark_smoke():
    assert "3 pages at 12 px" in _run("compression_study.py", "--tiny", "--device", "cpu", "--pages", "3",
                                      "--new-tokens", "4")


def test_engine_levers_benchmark_smoke():
    out = _run("engine_levers.py", "--tiny", "--device", "cpu", "--pages", "2", "--new-tokens", "2", "--max-batch", "2",
               "--mix", "3")
    assert "prompts prefilled together" in out and "mixed traffic" in out


def test_serve_benchmark_smoke():
    out = _run("serve_throughput.py", "--model", str(ROOT / "tests" / "data" / "golden"), "--device", "cpu", "--pages",
               "2", "--clients", "2", "--max-tokens", "2")
    assert "in-process" in out and "2 concurrent clients" in out and " 0 errors" in out


def test_remote_client_benchmark_smoke():
    _run("remote_client.py", "--pages", "4", "--concurrency", "2")


def _assert_positive_rates(text: str) -> None:
    """Every printed rate is a positive number (a -1.7 tok/s once passed a smoke test that only ran)."""
    rates = [float(m) for m in re.findall(r"(-?[\d.]+) (?:decoded )?(?:tok/s|pages/s)", text)]
    assert rates and all(r > 0 for r in rates), rates
