"""What the engine's reference checks share: transformers' logits for a token sequence (from a
model, an MLC directory's weights or a GGUF file), the largest logit difference along a path,
and the real model's prompts and English passage. Greedy runs and perplexity: engine.scoring."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

PASSAGE = Path(__file__).parent / "data" / "english_passage.txt"
SMOLLM2_PROMPTS = [
    "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>user\nWrite a haiku about the sea.<|im_end|>\n<|im_start|>assistant\n",
    "The three primary colours are",
]
SMOLLM2_PROMPT_IDS = ["capital", "haiku", "colours"]


def model_logits(model, token_ids: list[int]) -> np.ndarray:
    """A transformers model's float32 logits at every position of one sequence."""
    import torch

    with torch.no_grad():
        return model(torch.tensor([token_ids])).logits[0].float().numpy()


def reference_logits(hf_dir, weights: dict, token_ids: list[int]) -> np.ndarray:
    """transformers' logits at every position, from the MLC directory's own (rounded or
    dequantized) weights, so the comparison tests Tandem's kernels and not the storage."""
    import torch
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    model.load_state_dict({name: torch.from_numpy(array) for name, array in weights.items()}, strict=False)
    return model_logits(model, token_ids)


def gguf_reference_logits(gguf_path: Path, token_ids: list[int]) -> np.ndarray:
    """transformers' logits at every position, reading the GGUF file itself (dequantized)."""
    import torch
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(
        gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32
    ).eval()
    return model_logits(model, token_ids)


def worst_difference(ours: Iterable[np.ndarray], theirs: Iterable[np.ndarray]) -> float:
    """The largest |logit difference| over rows paired position by position."""
    return max(float(np.abs(mine - other).max()) for mine, other in zip(ours, theirs))
