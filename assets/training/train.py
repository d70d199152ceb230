"""Regenerates tandem-nano end to end: tokenizer, corpus stream, CPU training, HF checkpoint.

    OMP_WAIT_POLICY=PASSIVE python -m assets.training.train --minutes 55 --out assets/training/out

Training runs on a wall-clock budget; a checkpoint is saved every few minutes so a usable model
exists even if the run is cut short. Loss goes to OUT/train.log.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # busy-waiting threads crawl on shared cores

import argparse
import math
import random
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from transformers import LlamaForCausalLM

from assets.training.corpus import CorpusGenerator, Dialogue, generate
from assets.training.model import nano_config
from assets.training.tokenizer import (
    ENDOFTEXT, IM_END, chatml_piece, save_tokenizer, train_tokenizer,
)

TOKENIZER_SEED = 1
CORPUS_SEED = 2
TOKENIZER_SAMPLE = 30_000
MAX_DIALOGUE_TOKENS = 192
CHUNK_DIALOGUES = 4096


def encode_dialogues(tokenizer, dialogues: list[Dialogue]) -> list[tuple[list[int], list[bool]]]:
    """Token ids of each dialogue, with a mask true on the tokens the loss is taken on
    (assistant content and its <|im_end|>)."""
    pieces, owners = [], []
    for index, dialogue in enumerate(dialogues):
        for message in dialogue.messages:
            pieces.append(chatml_piece(message["role"], message["content"]))
            owners.append((index, message["role"]))
    encoded = tokenizer.encode_batch(pieces)
    result: list[tuple[list[int], list[bool]]] = [([], []) for _ in dialogues]
    for (index, role), encoding in zip(owners, encoded):
        ids, mask = result[index]
        piece = encoding.ids
        if role == "assistant":
            # Header "<|im_start|>assistant\n" is 3 tokens; the trailing "\n" after <|im_end|> is 1.
            mask.extend([False] * 3 + [True] * (len(piece) - 4) + [False])
        else:
            mask.extend([False] * len(piece))
        ids.extend(piece)
    return [(ids, mask) for ids, mask in result if len(ids) <= MAX_DIALOGUE_TOKENS]


def batches(tokenizer, generator: CorpusGenerator, token_budget: int, pad_id: int,
            rng: random.Random) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Right-padded batches of similar-length dialogues, shuffled within each chunk."""
    while True:
        encoded = encode_dialogues(tokenizer, [generator.dialogue() for _ in range(CHUNK_DIALOGUES)])
        encoded.sort(key=lambda item: len(item[0]))
        chunk, current = [], []
        for item in encoded:
            if current and (len(current) + 1) * len(item[0]) > token_budget:
                chunk.append(current)
                current = []
            current.append(item)
        if current:
            chunk.append(current)
        rng.shuffle(chunk)
        for group in chunk:
            # Few distinct shapes keep oneDNN's per-shape kernel cache (and memory) small.
            width = -(-max(len(ids) for ids, _ in group) // 16) * 16
            input_ids = torch.full((len(group), width), pad_id, dtype=torch.long)
            labels = torch.full((len(group), width), -100, dtype=torch.long)
            for row, (ids, mask) in enumerate(group):
                input_ids[row, : len(ids)] = torch.tensor(ids)
                targets = torch.tensor([t if m else -100 for t, m in zip(ids, mask)])
                labels[row, : len(ids)] = targets
            yield input_ids, labels


def learning_rate(step: int, progress: float, peak: float, warmup_steps: int) -> float:
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def save(model: LlamaForCausalLM, tokenizer, out_dir: Path) -> None:
    model.save_pretrained(out_dir, safe_serialization=True)
    save_tokenizer(tokenizer, out_dir)


def train(minutes: float, out_dir: Path, threads: int, token_budget: int, peak_lr: float,
          checkpoint_minutes: float) -> None:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    out_dir.mkdir(parents=True, exist_ok=True)
    log = (out_dir / "train.log").open("a", encoding="utf-8")

    def say(line: str) -> None:
        print(line, flush=True)
        log.write(line + "\n")
        log.flush()

    sample = generate(TOKENIZER_SAMPLE, TOKENIZER_SEED)
    tokenizer = train_tokenizer(
        "".join(chatml_piece(m["role"], m["content"]) for m in d.messages) for d in sample)
    eos_id, pad_id = tokenizer.token_to_id(IM_END), tokenizer.token_to_id(ENDOFTEXT)
    config = nano_config(tokenizer.get_vocab_size(), eos_token_id=eos_id, pad_token_id=pad_id)
    model = LlamaForCausalLM(config)
    params = sum(p.numel() for p in model.parameters())
    say(f"model: {params / 1e6:.2f}M parameters; training for {minutes} minutes on {threads} threads")

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
        lr=peak_lr, betas=(0.9, 0.95), eps=1e-8)
    stream = batches(tokenizer, CorpusGenerator(CORPUS_SEED), token_budget, pad_id, random.Random(3))

    start = time.monotonic()
    last_checkpoint = start
    step, tokens, running = 0, 0, None
    model.train()
    while True:
        elapsed = time.monotonic() - start
        progress = elapsed / (minutes * 60)
        if progress >= 1.0:
            break
        input_ids, labels = next(stream)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, progress, peak_lr, warmup_steps=100)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(input_ids=input_ids, use_cache=False).logits
        loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].float().reshape(-1, logits.size(-1)), labels[:, 1:].reshape(-1),
            ignore_index=-100)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        step += 1
        tokens += input_ids.numel()
        running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
        if step % 25 == 0:
            say(f"step {step} min {elapsed / 60:.1f} loss {running:.4f} "
                f"lr {optimizer.param_groups[0]['lr']:.2e} tok/s {tokens / max(elapsed, 1e-9):.0f}")
        if time.monotonic() - last_checkpoint > checkpoint_minutes * 60:
            save(model, tokenizer, out_dir)
            say(f"checkpoint at step {step}")
            last_checkpoint = time.monotonic()
    save(model, tokenizer, out_dir)
    say(f"done: {step} steps, {tokens} tokens, final loss {running:.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=55.0, help="wall-clock training budget")
    parser.add_argument("--out", type=Path, default=Path("assets/training/out"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--token-budget", type=int, default=3072, help="padded tokens per batch")
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--checkpoint-minutes", type=float, default=5.0)
    args = parser.parse_args()
    train(args.minutes, args.out, args.threads, args.token_budget, args.lr, args.checkpoint_minutes)


if __name__ == "__main__":
    main()
