"""dsocr_model: a faithful PyTorch DeepSeek-OCR that loads the official checkpoint unchanged."""
from .config import ClipConfig, DecoderConfig, OCRConfig, SamConfig
from .generate import Generation
from .model import DeepseekOCR
from .ngram import banned_ngram_tokens
from .preprocess import MODES, ImageViews, count_image_tokens, preprocess_image
from .weights import DEFAULT_MODEL_ID, CheckpointError, ModelNotFoundError

__all__ = [
    "DeepseekOCR", "ImageViews", "preprocess_image", "banned_ngram_tokens", "count_image_tokens", "MODES",
    "OCRConfig", "DecoderConfig", "SamConfig", "ClipConfig", "Generation", "CheckpointError",
    "ModelNotFoundError", "DEFAULT_MODEL_ID",
]
