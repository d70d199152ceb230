"""`tandem models`: list the local models, and `tandem models convert` a Hugging Face checkpoint
into an MLC model directory Tandem can run."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from app.local_models import models_dir

QUANTIZATION_CHOICES = ("q4f16_1", "q4f32_1", "q0f16", "q0f32")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "models", help="list local models; convert a Hugging Face checkpoint", description=__doc__
    )
    parser.set_defaults(handler=list_models)
    actions = parser.add_subparsers(dest="models_command", metavar="ACTION")
    convert = actions.add_parser(
        "convert",
        help="convert a Llama or Qwen2 Hugging Face checkpoint into a model Tandem runs",
        description="Convert a Llama or Qwen2 Hugging Face checkpoint (config.json, *.safetensors, "
        "tokenizer.json) into an MLC model directory.",
    )
    convert.add_argument("hf_dir", metavar="HF_DIR", type=Path, help="the downloaded checkpoint folder")
    convert.add_argument(
        "out_dir", metavar="OUT_DIR", type=Path, nargs="?",
        help="where to write the model (default: <data dir>/models/<name>-<quantization>)",
    )  # fmt: skip
    convert.add_argument("--quantization", choices=QUANTIZATION_CHOICES, default="q4f16_1")
    convert.add_argument("--conv-template", metavar="NAME", help="chat template: llama-3, chatml, qwen2 or phi-3")
    convert.add_argument(
        "--context-window", metavar="N", type=int, help="tokens of context (default: the model's, at most 8192)"
    )
    convert.add_argument("--overwrite", action="store_true", help="replace OUT_DIR if it already holds files")
    convert.set_defaults(handler=convert_model)
    __import__("app.commands.calibrate", fromlist=["register"]).register(actions)  # models calibrate NAME


def list_models(args: argparse.Namespace) -> int:
    from app.local_models import describe, discover_models, embedded_model

    models = [model for model in discover_models() if model.path.is_dir()]
    if not models:
        print(f"No models yet. Convert one with: tandem models convert HF_DIR (it goes to {models_dir()})")
        return 0
    for model in models:
        label = f"{model.label} (embedded)" if model == embedded_model() else model.label
        print(f"{label:32} {describe(model.path)}  {model.path}")
    return 0


def convert_model(args: argparse.Namespace) -> int:
    from engine.convert import convert_hf_checkpoint, describe
    from engine.errors import EngineError

    hf_dir: Path = args.hf_dir.expanduser()
    out_dir: Path = (args.out_dir or models_dir() / f"{hf_dir.resolve().name}-{args.quantization}").expanduser()
    try:
        result = convert_hf_checkpoint(
            hf_dir,
            out_dir,
            args.quantization,
            conv_template=args.conv_template,
            context_window=args.context_window,
            overwrite=args.overwrite,
            on_progress=_print_progress,
        )
    except EngineError as error:
        _clear_progress()
        print(f"tandem: error: {error}", file=sys.stderr)
        return 1
    except OSError as error:  # the disk: permissions, space
        _clear_progress()
        reason = error.strerror or error
        print(f"tandem: error: cannot write {out_dir}: {reason}; nothing was written.", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        _clear_progress()
        print("tandem: conversion cancelled; nothing was written.", file=sys.stderr)
        return 130
    _clear_progress()
    config = result.chat_config
    print(f"Converted {hf_dir} ({describe(config.model_config)})")
    print(
        f"Wrote {result.out_dir}: {config.quantization}, {result.tensor_count} tensors, "
        f"{result.weight_bytes / 1e6:.1f} MB, chat template {config.conv_template.name}."
    )
    if result.out_dir.resolve().parent == models_dir().resolve():
        print("Pick it in tandem with Ctrl+L (model picker); `tandem models` lists it.")
    else:
        print(f"Open it in tandem with Ctrl+L (model picker), or move it into {models_dir()} to have it listed.")
    return 0


def _print_progress(message: str, fraction: float) -> None:
    if sys.stderr.isatty():
        sys.stderr.write(f"\r\x1b[K[{fraction:4.0%}] {message}")
    else:
        sys.stderr.write(f"[{fraction:4.0%}] {message}\n")
    sys.stderr.flush()


def _clear_progress() -> None:
    if sys.stderr.isatty():
        sys.stderr.write("\r\x1b[K")
        sys.stderr.flush()
