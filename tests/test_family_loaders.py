"""DeepSeek-OCR-2 and Unlimited-OCR through every surface: the LangChain loader, the LlamaIndex reader and
the CLI run the tiny checkpoints of each family (real model code), with the family's prompt, a cache that
tells the models apart, and the multi-page option only where the family has it."""
from __future__ import annotations

import json

import pytest

from conftest import FIXTURES
from dsocr_loaders.apps.cli import main
from tiny_family import write_checkpoint

PDF = FIXTURES / "pdf" / "multi_page.pdf"


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("family-loaders")
    return {f: write_checkpoint(f, root / f, seed=7) for f in ("deepseek-ocr-2", "unlimited-ocr")}


def test_langchain_and_llama_index_read_with_each_family(family_dirs):
    from dsocr_loaders.langchain import DeepSeekOCRLoader
    from dsocr_loaders.llama_index import DeepSeekOCRReader

    docs = {}
    for family, folder in family_dirs.items():
        loader = DeepSeekOCRLoader(str(PDF), model=str(folder), device="cpu", mode="base", max_new_tokens=4, pages="1")
        with loader:
            (doc,) = loader.load()
        assert doc.metadata["page"] == 0 and doc.metadata["ocr_status"] in ("ok", "truncated", "empty")
        docs[family] = doc
        reader = DeepSeekOCRReader(model=str(folder), device="cpu", mode="base", max_new_tokens=4, pages="1")
        (node,) = reader.load_data(PDF)
        assert node.metadata["page_number"] == 1
        reader.close()
    models = {d.metadata["ocr_model"] for d in docs.values()}
    assert len(models) == 2  # the ids and cache keys name each checkpoint by content
    assert docs["unlimited-ocr"].id != docs["deepseek-ocr-2"].id


def test_cli_runs_each_family_and_the_cache_tells_them_apart(family_dirs, tmp_path, capsys):
    cache = tmp_path / "cache"
    common = ["--device", "cpu", "--mode", "base", "--max-new-tokens", "4", "-q", "--cache-dir", str(cache),
              "--pages", "1-2"]
    out = tmp_path / "unlimited"
    assert main(["convert", str(PDF), "-o", str(out), "--model", str(family_dirs["unlimited-ocr"]),
                 "--pages-per-pass", "2", *common]) == 0
    pages = json.loads((out / "multi_page.json").read_text())["pages"]
    assert [p["page"] for p in pages] == [0, 1]
    assert main(["convert", str(PDF), "-o", str(tmp_path / "ocr2"), "--model", str(family_dirs["deepseek-ocr-2"]),
                 *common]) == 0
    assert "0 from cache" in capsys.readouterr().out  # same pages, another model: nothing reused
    assert main(["convert", str(PDF), "-o", str(tmp_path / "again"), "--model", str(family_dirs["deepseek-ocr-2"]),
                 *common]) == 0
    assert "2 from cache" in capsys.readouterr().out
    assert main(["convert", str(PDF), "-o", str(tmp_path / "bad"), "--model", str(family_dirs["deepseek-ocr-2"]),
                 "--pages-per-pass", "2", *common]) == 2  # OCR-2 reads one page per pass: a usage error
    assert "one page per pass" in capsys.readouterr().err
