"""What a newcomer meets first: the wheel, the extras' import errors, environment variables, CLI verbosity."""
from __future__ import annotations

import logging
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_wheel_carries_the_licence_and_installs_a_working_cli(tmp_path):
    """Build the wheel, install it (no dependencies: `dsocr --help` needs none) in a clean venv, run it."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path / "dist"), str(ROOT)], check=True, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("dsocr-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.endswith("licenses/LICENSE") for n in names) and "dsocr_model/family/registry.py" in names
    meta = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA"))).decode()
    assert "License-Expression: MIT" in meta and "Programming Language :: Python :: 3.11" in meta
    assert "langchain-core<2,>=0.3" in meta.replace(" ", "") or "langchain-core>=0.3,<2" in meta.replace(" ", "")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", str(wheel)], check=True)
    out = subprocess.run([str(venv / "bin" / "dsocr"), "convert", "--help"], capture_output=True, text=True,
                         cwd=tmp_path)
    text = " ".join(out.stdout.split())  # help wraps lines
    assert out.returncode == 0 and "exit codes" in text and "(default: 144" in text
    version = subprocess.run([str(venv / "bin" / "python"), "-c", "import dsocr_loaders; print(dsocr_loaders.__version__)"],
                             capture_output=True, text=True, cwd=tmp_path)
    assert version.stdout.strip() == subprocess.run([sys.executable, "-c", "import dsocr_model; print(dsocr_model.__version__)"],
                                                    capture_output=True, text=True).stdout.strip() != "0+unknown"


@pytest.mark.parametrize("module,extra", [("dsocr_loaders.langchain", "langchain"),
                                          ("dsocr_loaders.llama_index", "llamaindex")])
def test_an_adapter_without_its_framework_names_the_extra(module, extra):
    blocked = "langchain_core" if extra == "langchain" else "llama_index"
    code = f"import sys; sys.modules[{blocked!r}] = None\ntry: import {module}\nexcept ImportError as e: print(e)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert f"pip install 'dsocr[{extra}]'" in out.stdout


def test_environment_variables_set_the_common_defaults(monkeypatch):
    from conftest import GOLDEN
    from dsocr_loaders import EngineSettings, OCRPipeline
    from dsocr_loaders.apps.cli import build_parser
    from dsocr_loaders.langchain import DeepSeekOCRLoader
    from dsocr_loaders.llama_index import DeepSeekOCRReader
    from test_pipeline import FakeEngine

    monkeypatch.setenv("DSOCR_MODEL", str(GOLDEN))
    monkeypatch.setenv("DSOCR_DEVICE", "cpu")
    monkeypatch.setenv("DSOCR_MODE", "tiny")
    assert (EngineSettings().model, EngineSettings().device) == (str(GOLDEN), "cpu")
    assert OCRPipeline(FakeEngine()).settings.mode == "tiny"
    assert DeepSeekOCRLoader("x.pdf", engine=FakeEngine()).model == str(GOLDEN)
    assert DeepSeekOCRReader(engine=FakeEngine()).device == "cpu"
    args = build_parser().parse_args(["convert", "x.pdf", "-o", "o"])
    assert (args.model, args.device, args.mode) == (str(GOLDEN), "cpu", "tiny")
    assert OCRPipeline(FakeEngine(), ocr=__import__("dsocr_loaders").OCRSettings(mode="base")).settings.mode == "base"


def test_cli_verbosity_flags(tmp_path, monkeypatch):
    from conftest import FIXTURES, GOLDEN
    from dsocr_loaders.apps.cli import main

    args = ["convert", str(FIXTURES / "pdf" / "c02-22.pdf"), "-o", str(tmp_path), "--model", str(GOLDEN),
            "--device", "cpu", "--mode", "tiny", "--max-new-tokens", "2", "--no-cache", "-q"]
    assert main(args + ["-vv"]) == 0 and logging.getLogger().level == logging.DEBUG
    assert main(args + ["-v"]) == 0 and logging.getLogger().level == logging.INFO
    assert main(args + ["--log-level", "ERROR", "-v"]) == 0 and logging.getLogger().level == logging.ERROR
    assert main(args) == 0 and logging.getLogger().level == logging.WARNING
    assert logging.getLogger("dsocr_loaders.ocr.engines").level == logging.INFO  # the model-loading line shows
