"""Packages a trained checkpoint as the shipped tandem-nano: the engine's converter, then Tandem's
own section (refusal, skills), the default system message (in the Jinja chat template and the
conv_template) and the sampling settings it was evaluated with.

    python -m assets.training.package assets/training/out [--out assets/models/tandem-nano]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

from assets import embedded_model_dir
from assets.training.corpus import DEFAULT_SYSTEM
from assets.training.facts import REFUSAL
from engine.config import read_chat_config, write_chat_config
from engine.convert import convert_hf_checkpoint

QUANTIZATION = "q4f32_1"
SKILLS = ("tandem_help", "small_talk")
"""Only skills the held-out evaluation shows it does (see the model card)."""
CPU_MATMUL = "float"
"""The numerics its figures were measured with. The int8 path doubles a big model's speed, but
this one already runs at hundreds of tokens a second, and quantized activations tip a few of its
borderline answers (a near-domain question answered instead of refused)."""

TEMPERATURE, TOP_P = 0.7, 0.95
"""The sampling its router calibration was fitted with (Tandem's fixed settings before models
carried their own)."""


MODEL_CARD = "README.md"


def chat_template(default_system: str) -> str:
    """ChatML as Jinja, writing `default_system` when the conversation brings no system message
    (so the engine's Jinja path renders what the conv_template did)."""
    return (
        "{% if not messages or messages[0]['role'] != 'system' %}"
        "{{ '<|im_start|>system\\n' + " + json.dumps(default_system) + " + '<|im_end|>\\n' }}{% endif %}"
        "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + "
        "'<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    )


def write_chat_template(out_dir: Path, default_system: str) -> None:
    path = out_dir / "tokenizer_config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config["chat_template"] = chat_template(default_system)
    path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def package(hf_dir: Path, out_dir: Path, quantization: str = QUANTIZATION) -> Path:
    card = out_dir / MODEL_CARD
    kept_card = card.read_text(encoding="utf-8") if card.is_file() else None  # the converter starts afresh
    result = convert_hf_checkpoint(hf_dir, out_dir, quantization, conv_template="chatml", overwrite=True)
    if kept_card is not None:
        (result.out_dir / MODEL_CARD).write_text(kept_card, encoding="utf-8")
    config = read_chat_config(out_dir)
    # The model was trained with this system message; the engine sends it when the caller gives none.
    template = replace(config.conv_template, system_message=DEFAULT_SYSTEM)
    tandem = {"refusal": REFUSAL, "skills": list(SKILLS), "cpu_matmul": CPU_MATMUL}
    write_chat_config(
        replace(config, conv_template=template, tandem=tandem, temperature=TEMPERATURE, top_p=TOP_P), out_dir
    )
    write_chat_template(out_dir, DEFAULT_SYSTEM)
    return result.out_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("hf_dir", type=Path)
    parser.add_argument("--out", type=Path, default=embedded_model_dir())
    parser.add_argument("--quantization", default=QUANTIZATION)
    args = parser.parse_args()
    out = package(args.hf_dir, args.out, args.quantization)
    size = sum(p.stat().st_size for p in out.iterdir() if p.is_file() and p.name != MODEL_CARD)
    print(f"wrote {out} ({size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
