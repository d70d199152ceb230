"""Greedy-decodes the held-out sets with transformers on a trained checkpoint and scores them.

    python -m assets.training.selfcheck assets/training/out [--no-system] [--show-errors]
    python -m assets.training.selfcheck assets/models/tandem-nano   # the shipped q4, dequantized

This measures with transformers; bench/nano.py measures the shipped model through the engine.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
from pathlib import Path

import torch
from transformers import LlamaForCausalLM

from assets.eval.scoring import (
    Case, Outcome, in_domain_cases, out_of_domain_cases, print_errors, score, score_by_set,
)
from assets.training.corpus import DEFAULT_SYSTEM
from assets.training.tokenizer import IM_END, assistant_header, chatml_piece, load_tokenizer


@torch.no_grad()
def answer(model, tokenizer, prompt: str, system: str | None, max_tokens: int = 80) -> tuple[str, float]:
    text = (chatml_piece("system", system) if system is not None else "")
    text += chatml_piece("user", prompt) + assistant_header()
    ids = torch.tensor([tokenizer.encode(text).ids])
    eos = tokenizer.token_to_id(IM_END)
    out = model(input_ids=ids, use_cache=True)
    past, logits = out.past_key_values, out.logits[0, -1]
    generated, logprobs = [], []
    for _ in range(max_tokens):
        logp = torch.log_softmax(logits.float(), dim=-1)
        token = int(torch.argmax(logp))
        logprobs.append(float(logp[token]))
        if token == eos:
            break
        generated.append(token)
        out = model(input_ids=torch.tensor([[token]]), past_key_values=past, use_cache=True)
        past, logits = out.past_key_values, out.logits[0, -1]
    return tokenizer.decode(generated), sum(logprobs) / len(logprobs)


def evaluate(model_dir: Path, system: str | None, show_errors: bool) -> None:
    torch.set_num_threads(2)
    if (model_dir / "mlc-chat-config.json").is_file():
        from assets.training.reference import reference_model

        model = reference_model(model_dir)
    else:
        model = LlamaForCausalLM.from_pretrained(model_dir).eval()
    tokenizer = load_tokenizer(model_dir)

    def run(cases: list[Case]) -> list[Outcome]:
        return [Outcome(case, *answer(model, tokenizer, case.prompt, system)) for case in cases]

    in_domain, out_of_domain = run(in_domain_cases()), run(out_of_domain_cases())
    report = score(in_domain, out_of_domain)
    if show_errors:
        print_errors(in_domain, out_of_domain)
    for name, part in score_by_set(in_domain, out_of_domain).items():
        print(f"{name}: {part}")
    print(f"all: {report}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--no-system", action="store_true", help="prompt without the default system message")
    parser.add_argument("--show-errors", action="store_true")
    args = parser.parse_args()
    evaluate(args.model_dir, None if args.no_system else DEFAULT_SYSTEM, args.show_errors)


if __name__ == "__main__":
    main()
