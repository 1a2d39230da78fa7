"""The VQA model (X-VLM backbone + BAN/AoA + ISubGVQA, fused): build_model and summary."""

from .summary import nominal_meta, summary
from .vqa_model import VQAModel, build_model

__all__ = ["VQAModel", "build_model", "nominal_meta", "summary"]
