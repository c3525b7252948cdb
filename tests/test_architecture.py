"""The structure holds: import contracts (lint-imports), and a second architecture needs one spec and one
registry line, after which the pipeline, the PageResult token counts and the CLI follow it."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from conftest import GOLDEN
from dsocr_model import Architecture, DeepseekOCR, Guard, Mode, ModelSpec, register
from dsocr_model.family.registry import UnknownArchitectureError, architecture_for, unregister

ROOT = Path(__file__).resolve().parents[1]

# Another tile size (256, threshold 256), another default mode, and the flat token layout (tiles, global,
# separator; no newlines): 600x400 -> grid (3, 2) -> 6*4*4 + 8*8 + 1 = 161 placeholders (v1's layout: 177).
TOY = ModelSpec(name="toy-ocr", modes={"whole": Mode(512, 512, False), "tiles": Mode(512, 256, True)},
                default_mode="tiles", prompts={"markdown": "<image>\nConvert the document to markdown.",
                                               "free_ocr": "<image>\nFree OCR."},
                layout="flat", tile_threshold=256, document_guard=Guard(None, None))


def test_import_contracts_hold():
    # In a child process: import-linter configures logging, which would silence other tests' loggers.
    code = ("import sys; from importlinter.cli import lint_imports; "
            f"sys.exit(lint_imports(config_filename={str(ROOT / '.importlinter')!r}, no_cache=True, no_logo=True))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.fixture
def toy_checkpoint(tmp_path):
    register(Architecture("toy-ocr", TOY, "dsocr_model.modeling.model:DeepseekOCR", model_types=("toy-ocr",)))
    ckpt = tmp_path / "toy"
    shutil.copytree(GOLDEN, ckpt, ignore=shutil.ignore_patterns("cases", "images", "*.npz"))
    config = json.loads((ckpt / "config.json").read_text())
    config.update(model_type="toy-ocr", architectures=["ToyOCRForCausalLM"])
    (ckpt / "config.json").write_text(json.dumps(config))
    Image.new("RGB", (600, 400), "white").save(tmp_path / "page.png")
    yield ckpt
    unregister("toy-ocr")


def test_registry_picks_the_architecture_from_config(toy_checkpoint):
    assert architecture_for(toy_checkpoint).spec is TOY
    assert architecture_for(GOLDEN).name == "deepseek-ocr"
    with pytest.raises(UnknownArchitectureError, match="toy-ocr"):
        architecture_for({"model_type": "nope", "architectures": ["NopeForCausalLM"]})
    model = DeepseekOCR.from_pretrained(toy_checkpoint)
    assert model.spec is TOY


def test_pipeline_and_token_counts_follow_a_registered_architecture(toy_checkpoint):
    from dsocr_loaders import EngineSettings, OCRPipeline, OCRSettings

    pipe = OCRPipeline(EngineSettings(str(toy_checkpoint), device="cpu"), ocr=OCRSettings(max_new_tokens=3))
    (r,) = pipe.run(toy_checkpoint.parent / "page.png")
    assert r.error is None and r.text_tokens == 3  # the real model consumed exactly the spec's placeholders
    assert r.settings["mode"] == "tiles" and r.vision_tokens == 161
    assert r.valid_vision_tokens == 6 * 16 + 64  # 512 global view: no padding discount
    with pytest.raises(ValueError, match="unknown mode 'gundam' for toy-ocr"):
        OCRPipeline(EngineSettings(str(toy_checkpoint)), ocr=OCRSettings(mode="gundam"))


def test_cli_mode_choices_follow_a_registered_architecture(toy_checkpoint, tmp_path, capsys):
    from dsocr_loaders.apps.cli import build_parser, main

    assert "tiles" in build_parser()._subparsers._group_actions[0].choices["convert"].format_help()
    args = ["convert", str(tmp_path / "page.png"), "-o", str(tmp_path / "out"), "--model", str(toy_checkpoint),
            "--device", "cpu", "--max-new-tokens", "2", "--no-cache", "-q"]
    assert main(args + ["--mode", "gundam"]) == 2
    assert "unknown mode 'gundam' for toy-ocr" in capsys.readouterr().err
    assert main(args + ["--mode", "tiles"]) == 0
    (page,) = json.loads((tmp_path / "out" / "page.json").read_text())["pages"]
    assert page["vision_tokens"] == 161 and page["settings"]["mode"] == "tiles"


def test_adapters_expose_the_same_explicit_options_with_one_set_of_defaults():
    import dataclasses
    import inspect

    from dsocr_loaders import LoaderOptions
    from dsocr_loaders.apps.cli import build_parser
    from dsocr_loaders.langchain import DeepSeekOCRLoader, DeepSeekOCRParser
    from dsocr_loaders.llama_index import DeepSeekOCRReader
    from dsocr_loaders.ocr import settings

    names = LoaderOptions.names()
    loader = inspect.signature(DeepSeekOCRLoader).parameters
    assert list(loader)[0] == "file_path" and set(loader) == {"file_path", *names}
    assert all(p.kind is p.KEYWORD_ONLY for n, p in loader.items() if n != "file_path")  # no **kwargs
    assert set(inspect.signature(DeepSeekOCRParser).parameters) == set(names)
    reader = DeepSeekOCRReader.model_fields
    assert set(reader) - set(names) == {"is_remote", "extract_figures"}
    for f in dataclasses.fields(LoaderOptions):
        factory = f.default_factory if f.default_factory is not dataclasses.MISSING else None
        default = f.default if f.default is not dataclasses.MISSING else factory() if factory else None
        assert reader[f.name].get_default(call_default_factory=True) == default, f.name
    assert LoaderOptions.pages_delimiter == settings.PAGES_DELIMITER
    convert = build_parser()._subparsers._group_actions[0].choices["convert"]
    assert convert.get_default("pages_delimiter") == settings.PAGES_DELIMITER
    assert convert.get_default("dpi") == settings.DEFAULT_DPI == LoaderOptions.dpi
    with pytest.raises(TypeError, match="mdoe"):
        DeepSeekOCRLoader("x.pdf", mdoe="tiny")
    with pytest.raises(ValueError, match="mdoe"):  # pydantic's ValidationError is a ValueError
        DeepSeekOCRReader(mdoe="tiny")
