"""The README's examples run offline on the tiny checkpoint (real model code, real frameworks)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import FIXTURES, GOLDEN

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--model", str(GOLDEN), "--device", "cpu", "--mode", "tiny", "--max-new-tokens", "4", "--pages", "1"]


def run(script: str, *args: str) -> str:
    out = subprocess.run([sys.executable, str(ROOT / "examples" / script), *args, *TINY], capture_output=True,
                         text=True, timeout=600, check=True)
    return out.stdout


def test_langchain_rag_example():
    out = run("langchain_rag.py", str(FIXTURES / "pdf" / "multi_page.pdf"), "--query", "word processor")
    assert "blocks from" in out and "[page 1," in out


def test_llamaindex_ingest_example(tmp_path):
    (tmp_path / "a.pdf").write_bytes((FIXTURES / "pdf" / "c02-22.pdf").read_bytes())
    out = run("llamaindex_ingest.py", str(tmp_path))
    assert "1 pages; statuses: ['truncated']" in out and "[a.pdf p.1]" in out
