"""`tandem models`: list, inspect and remove local models; `pull` one from the Hugging Face Hub,
`import` a GGUF file or an Ollama model, `convert` a Hugging Face checkpoint."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from app.errors import unexpected
from app.models.catalog import models_dir
from engine.errors import EngineError

QUANTIZATION_CHOICES = ("q4f16_1", "q4f32_1", "q0f16", "q0f32")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "models", help="list, pull, import, inspect and remove local models", description=__doc__
    )
    parser.set_defaults(handler=list_models)
    actions = parser.add_subparsers(dest="models_command", metavar="ACTION")
    pull = actions.add_parser(
        "pull",
        help="download a model from the Hugging Face Hub",
        description="Download a model from the Hugging Face Hub (HF_ENDPOINT names another Hub). An MLC "
        "repository is used as it is, a safetensors checkpoint (Llama, Qwen2) is converted, a GGUF file "
        "is imported. A cut download continues where it stopped when you run the command again.",
    )
    pull.add_argument(
        "spec", metavar="REPO[@REVISION][:FILE.gguf]",
        help="e.g. mlc-ai/Qwen2-0.5B-Instruct-q4f16_1-MLC, or OWNER/NAME:model.Q4_K_M.gguf",
    )  # fmt: skip
    pull.add_argument("--name", help="the model's name in Tandem (default: from the repository or file)")
    pull.add_argument(
        "--quantization", choices=QUANTIZATION_CHOICES, default="q4f16_1",
        help="for safetensors checkpoints: how to store the weights (default q4f16_1)",
    )  # fmt: skip
    pull.add_argument("--overwrite", action="store_true", help="replace a model of the same name")
    pull.set_defaults(handler=pull_model)
    imp = actions.add_parser(
        "import",
        help="import a GGUF file or an Ollama model (referenced, not copied)",
        description="Import a GGUF file, or a model from Ollama's store ($OLLAMA_MODELS, else "
        "~/.ollama/models). The file is referenced where it lies, never copied.",
    )
    imp.add_argument("source", metavar="PATH.gguf|ollama:NAME[:TAG]")
    imp.add_argument("--name", help="the model's name in Tandem (default: from the file or Ollama name)")
    imp.add_argument("--overwrite", action="store_true", help="replace a model of the same name")
    imp.set_defaults(handler=import_model)
    info = actions.add_parser("info", help="show what a model is and where it came from")
    info.add_argument("name", metavar="NAME")
    info.set_defaults(handler=model_info)
    rm = actions.add_parser("rm", help="remove a model (a GGUF it references is left alone)")
    rm.add_argument("name", metavar="NAME")
    rm.set_defaults(handler=remove_model)
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
    from app.models.catalog import human_size, installed_models

    models = installed_models()
    rows = [("NAME", "ARCH", "QUANT", "SIZE", "CONTEXT", "SOURCE")]
    for model in models:
        source = "embedded" if model.embedded else model.source.describe()
        if model.problem:
            source = f"unusable: {model.problem}"
        context = str(model.context) if model.context else "?"
        rows.append((model.name, model.architecture, model.quantization, human_size(model.size_bytes), context, source))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[5])
    if len(models) == 1:
        print(
            "\nOnly the embedded model so far. Get another with `tandem models pull REPO` or "
            "`tandem models import FILE.gguf|ollama:NAME`."
        )
    return 0


def model_info(args: argparse.Namespace) -> int:
    from app.models.catalog import UnknownModel, find_model, human_size

    try:
        model = find_model(args.name)
    except UnknownModel as error:
        return _error(str(error))
    lines = [
        ("name", model.name),
        ("folder", str(model.path)),
        ("architecture", model.architecture),
        ("quantization", model.quantization),
        ("size", human_size(model.size_bytes)),
        ("context", f"{model.context} tokens" if model.context else "?"),
        ("source", "ships with Tandem" if model.embedded else model.source.describe()),
    ]
    if model.source.route:
        lines.append(("route", model.source.route))
    if model.referenced:
        lines.append(("weights", f"{model.referenced} (referenced, not copied)"))
    if model.tensor_types:
        lines.append(("tensor types", ", ".join(f"{k} {v}" for k, v in sorted(model.tensor_types.items()))))
    if model.problem:
        lines.append(("problem", model.problem))
    for key, value in lines:
        print(f"{key + ':':14}{value}")
    return 1 if model.problem else 0


def remove_model(args: argparse.Namespace) -> int:
    from app.models.catalog import ModelNameError, UnknownModel, human_size
    from app.models.catalog import remove_model as remove

    try:
        model = remove(args.name)
    except (UnknownModel, ModelNameError) as error:
        return _error(str(error))
    except OSError as error:
        return _error(f"cannot remove {args.name}: {error.strerror or error}.")
    print(f"Removed {model.name} ({human_size(model.size_bytes)}, {model.path}).")
    if model.referenced and model.source.kind in ("ollama", "gguf"):
        print(f"The GGUF it read, {model.referenced}, is untouched.")
    return 0


def pull_model(args: argparse.Namespace) -> int:
    from app.models.catalog import ModelNameError
    from app.models.hub import PullError, PullReporter, parse_spec, pull
    from app.models.install import InstallError

    bar = _DownloadBar()
    try:
        spec = parse_spec(args.spec)
        result = pull(
            spec,
            name=args.name,
            quantization=args.quantization,
            endpoint=os.environ.get("HF_ENDPOINT") or None,
            offline=_offline(args),
            overwrite=args.overwrite,
            reporter=PullReporter(on_start=bar.start, on_bytes=bar.advance, on_stage=bar.stage),
        )
    except (PullError, InstallError, ModelNameError) as error:
        bar.close()
        return _error(str(error))
    except KeyboardInterrupt:
        bar.close()
        print("tandem: pull cancelled; run the same command again to continue the download.", file=sys.stderr)
        return 130
    except (EngineError, OSError) as error:  # the engine's own errors name their fix
        bar.close()
        return _error(f"{args.spec}: {error}; nothing was installed.")
    except Exception as error:  # last resort: logged, and said to be unexpected
        bar.close()
        return _error(f"{args.spec}: {unexpected(error)}; nothing was installed.")
    bar.close()
    fetched = f"downloaded {result.downloaded_bytes / 1e6:.1f} MB" if result.downloaded_bytes else "already downloaded"
    print(f"Pulled {spec} at {result.commit[:12]} ({fetched}) as {result.name}: {result.path}")
    _say_done(result.name, result.route)
    return 0


def import_model(args: argparse.Namespace) -> int:
    from app.models.catalog import ModelNameError
    from app.models.gguf_import import import_source
    from app.models.install import InstallError

    bar = _DownloadBar()
    try:
        installed = import_source(args.source, name=args.name, overwrite=args.overwrite, on_progress=bar.stage)
    except (InstallError, ModelNameError) as error:
        bar.close()
        return _error(str(error))
    except KeyboardInterrupt:
        bar.close()
        print("tandem: import cancelled; nothing was installed.", file=sys.stderr)
        return 130
    except (EngineError, OSError) as error:  # the importer's ModelFileError names the file and the fix
        bar.close()
        return _error(f"{error}; nothing was installed.")
    except Exception as error:  # last resort: logged, and said to be unexpected
        bar.close()
        return _error(f"{unexpected(error)}; nothing was installed.")
    bar.close()
    print(f"Imported {args.source} as {installed.name}: {installed.path}")
    _say_done(installed.name, installed.route)
    return 0


def _say_done(name: str, route: str) -> None:
    print(f"Route: {route}.")
    print(f"Use it with `tandem ask --model {name} ...`, or pick it in tandem with Ctrl+L.")
    print(f"Tune its confidence threshold with `tandem models calibrate {name}`.")


def _offline(args: argparse.Namespace) -> bool:
    """The --offline flag, or offline privacy mode in the saved settings."""
    if getattr(args, "offline", False):
        return True
    from app.settings import load_settings
    from app.store import Store, StoreError

    try:
        with Store.open(Path(args.db) if args.db else None) as store:
            return load_settings(store).mode == "offline"
    except StoreError:
        return False  # no readable history yet: the settings are the defaults (ask mode)


def _error(message: str) -> int:
    print(f"tandem: error: {message}", file=sys.stderr)
    return 1


class _DownloadBar:
    """A tqdm bar on stderr for the bytes, then one line per stage of converting or importing."""

    def __init__(self) -> None:
        self.bar: Any = None

    def start(self, total: int, already: int) -> None:
        from tqdm import tqdm

        self.bar = tqdm(
            total=total, initial=0, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr,
            desc="downloading", dynamic_ncols=True, disable=False,
            mininterval=0.5,
        )  # fmt: skip
        if already:
            from app.models.catalog import human_size

            self.bar.write(f"continuing: {human_size(already)} already here", file=sys.stderr)

    def advance(self, count: int) -> None:
        if self.bar is not None:
            self.bar.update(count)

    def stage(self, message: str, fraction: float) -> None:
        if self.bar is not None:
            self.close()
        _print_progress(message, fraction)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        _clear_progress()


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
