"""Choosing the next token from a row of logits, in numpy: repetition penalty, then temperature,
top-k, top-p and min-p (transformers' order), with log-probabilities and alternatives from the RAW
logits; and resolving a request's settings against the model's own defaults."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
import threading
from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

from engine.api import SETTING_NAMES, check_setting

TOP_ALTERNATIVES = 5
_FIRST_CANDIDATES = 256


@dataclass(frozen=True)
class SamplingParams:
    """Concrete settings for one generation. The defaults change nothing (plain sampling at
    temperature 1), as transformers and MLC read a model that says nothing."""

    temperature: float = 1.0
    """0 means greedy."""
    top_p: float = 1.0
    top_k: int = 0
    """Keep only the k most likely tokens; 0 (or less) keeps them all."""
    min_p: float = 0.0
    """Drop tokens whose probability is below min_p times the most likely one's."""
    repetition_penalty: float = 1.0
    """>1 discourages tokens already seen (the CTRL rule: divide positive logits, multiply negative)."""
    top_k_alternatives: int = TOP_ALTERNATIVES

    def with_request(self, request: Any) -> SamplingParams:
        """These defaults with each setting the request gives (not None) put in their place."""
        given = {name: getattr(request, name) for name in SETTING_NAMES if getattr(request, name, None) is not None}
        return replace(self, **given) if given else self


def params_from(values: dict[str, Any], base: SamplingParams | None = None) -> SamplingParams:
    """`base` (default: neutral) with the settings in `values`; ValueError names a bad one."""
    kinds = {f.name: f.type for f in fields(SamplingParams)}
    clean: dict[str, Any] = {}
    for name, value in values.items():
        problem = check_setting(name, value)
        if problem:
            raise ValueError(problem)
        clean[name] = int(value) if kinds[name] in ("int", int) else float(value)
    return replace(base or SamplingParams(), **clean)


@dataclass(frozen=True)
class SampledToken:
    token_id: int
    logprob: float
    """log p(token) under the raw logits, whatever the temperature or penalties."""
    alternatives: tuple[tuple[int, float], ...]
    """The most likely (token_id, logprob) pairs under the raw logits, best first."""


@dataclass(frozen=True)
class BlockStats:
    """What the engine computed beside a step's logits (engine/tvm_backend/logit_stats.py): per
    row and block of `block` vocabulary ids (the last one may be ragged), the maximum and the
    sum of exp(logit - maximum), [rows, blocks] float32 each."""

    maxima: np.ndarray
    sums: np.ndarray
    block: int

    def rows(self, chosen: Sequence[int]) -> BlockStats:
        """The statistics of the rows `chosen`, in that order."""
        return BlockStats(self.maxima[chosen], self.sums[chosen], self.block)


def make_rng(seed: int | None) -> np.random.Generator:
    """A generator: seeded for reproducible sampling, else from fresh entropy."""
    return np.random.default_rng(seed)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """log-probabilities of a row of logits, computed in float64."""
    values = np.asarray(logits, dtype=np.float64)
    shifted = values - values.max()
    return shifted - np.log(np.exp(shifted).sum())


def top_alternatives(logprobs: np.ndarray, k: int = TOP_ALTERNATIVES) -> tuple[tuple[int, float], ...]:
    """The k most likely tokens, best first (ties go to the lower id)."""
    k = min(k, logprobs.shape[0])
    candidates = np.argpartition(-logprobs, k - 1)[:k]
    ordered = sorted(candidates.tolist(), key=lambda i: (-logprobs[i], i))
    return tuple((int(i), float(logprobs[i])) for i in ordered)


def sample(
    logits: np.ndarray,
    params: SamplingParams,
    rng: np.random.Generator,
    previous_ids: Iterable[int] = (),
    stats: BlockStats | None = None,
) -> SampledToken:
    """Pick the next token. Greedy when temperature is 0 (or the filters keep a single token).

    previous_ids: the sequence so far (prompt and generated), for the repetition penalty.
    stats: the engine's block statistics of these logits, when it computed them."""
    return sample_rows(np.asarray(logits).reshape(1, -1), [params], [rng], [previous_ids], stats)[0]


def sample_rows(
    logits: np.ndarray,
    params: Sequence[SamplingParams],
    rngs: Sequence[np.random.Generator],
    previous_ids: Sequence[Iterable[int]],
    stats: BlockStats | None = None,
) -> list[SampledToken]:
    """sample() for each row of logits [rows, vocab] with its own settings, generator and history.
    A plain greedy row (no penalty) costs a max, an argmax and one exp pass over the vocabulary
    (each one numpy call over every row), in the logits' precision (a model's float32: its sum
    in float64 is within about 1e-7 of log_softmax's float64 figure) into a reused buffer; the
    alternatives come from a few candidate blocks rather than a partition of the whole row. No
    vocabulary-wide temporaries: each one page-faults its memory in anew. With the engine's
    `stats` for these rows none of those passes runs here."""
    rows = np.asarray(logits).reshape(len(params), -1)
    if rows.dtype not in (np.float32, np.float64):  # float64 logits (a reference) stay exact
        rows = rows.astype(np.float64)
    widest = max(p.top_k_alternatives for p in params)
    usable = stats is not None and stats.maxima.shape[0] == rows.shape[0] and (
        stats.block == _candidate_block(rows.shape[1], widest)
    )
    if usable:
        assert stats is not None
        peaks, greedy, normalizers, candidates = _from_block_stats(rows, stats, widest)
    else:
        # Vocabulary-wide passes over all rows at once (one numpy call each, not one per row).
        candidates = _top_candidates(rows, widest)
        peaks = rows.max(axis=1)
        greedy = rows.argmax(axis=1)
        shifted = _scratch(rows.shape, rows.dtype)
        np.subtract(rows, peaks[:, None], out=shifted)
        normalizers = np.log(np.exp(shifted, out=shifted).sum(axis=1, dtype=np.float64))
    chosen: list[SampledToken] = []
    for row, setting in enumerate(params):
        values, peak, normalizer = rows[row], np.float64(peaks[row]), normalizers[row]
        if setting.temperature <= 0 and setting.repetition_penalty == 1.0:
            token_id = int(greedy[row])
        else:
            token_id = _pick(values.astype(np.float64), setting, rngs[row], previous_ids[row])
        ids = _at_least_kth(values, candidates[row], setting.top_k_alternatives)
        logprobs = (values[ids].astype(np.float64) - peak) - normalizer
        best = np.lexsort((ids, -logprobs))[: min(setting.top_k_alternatives, ids.shape[0])]
        chosen.append(
            SampledToken(
                token_id=token_id,
                logprob=float((np.float64(values[token_id]) - peak) - normalizer),
                alternatives=tuple((int(ids[i]), float(logprobs[i])) for i in best),
            )
        )
    return chosen


def _from_block_stats(rows: np.ndarray, stats: BlockStats, k: int):
    """(maxima, argmaxes, log-sum-exps, candidate ids for the k best) of each row from its
    blocks' statistics: the argmax is searched in the first block holding the row's maximum
    only, and the candidates are the blocks whose maxima lead."""
    maxima = stats.maxima.astype(np.float64)
    peaks = maxima.max(axis=1)
    with np.errstate(invalid="ignore"):  # a block of -inf logits (masked ids) adds nothing
        weighted = np.where(maxima > -np.inf, stats.sums * np.exp(maxima - peaks[:, None]), 0.0)
    normalizers = np.log(weighted.sum(axis=1))
    leading = np.argmax(maxima == peaks[:, None], axis=1) * stats.block
    greedy = np.array([start + np.argmax(row[start : start + stats.block]) for row, start in zip(rows, leading)])
    vocab = rows.shape[1]
    if k <= 0:
        candidates = [np.arange(0)] * rows.shape[0]
    elif maxima.shape[1] <= k:
        candidates = [np.arange(vocab)] * rows.shape[0]
    else:
        candidates = _leading_blocks(maxima, k, stats.block, vocab)
    return peaks.astype(rows.dtype), greedy, normalizers, candidates


def _at_least_kth(values: np.ndarray, ids: np.ndarray, k: int) -> np.ndarray:
    """Of `ids`, those whose value is at least the k-th largest among them (ties included), so
    that sorting the few left by (value, id) finds the k best in order."""
    if k <= 0 or ids.shape[0] <= k:
        return ids
    chosen = values[ids]
    kth = np.partition(chosen, ids.shape[0] - k)[ids.shape[0] - k]
    return ids[chosen >= kth]


_SCRATCH = threading.local()


def _scratch(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A buffer of `shape` and `dtype`, kept per thread for the next call (a larger one is cut
    down to size: a batch's row count changes from step to step)."""
    size = int(np.prod(shape))
    buffer = getattr(_SCRATCH, "buffer", None)
    if buffer is None or buffer.shape[0] < size or buffer.dtype != dtype:
        buffer = _SCRATCH.buffer = np.empty(size, dtype)
    return buffer[:size].reshape(shape)


def _pick(logits: np.ndarray, params: SamplingParams, rng: np.random.Generator, previous_ids: Iterable[int]) -> int:
    """The token one row's settings pick: penalty, then greedy or temperature and the filters.
    With a top-k the softmax and the draw run over the k most likely tokens (ties with the k-th
    included) rather than the whole vocabulary: every other token's probability is 0 after
    top-k, and min-p and top-p compare probabilities with each other, so the draw is the same
    (llama.cpp's defaults, top-k 40, took 1.5 ms a token over the whole vocabulary: bench/sampling.py)."""
    adjusted = _penalise(logits, params.repetition_penalty, previous_ids)
    if params.temperature <= 0:
        return int(np.argmax(adjusted))
    if 0 < params.top_k < adjusted.shape[0] // _CANDIDATE_SHARE:
        ids = _at_least_kth(adjusted, _top_candidates(adjusted[None, :], params.top_k)[0], params.top_k)
        kept = _keep_min_p(_shifted(adjusted[ids], params.temperature), params.min_p)
        return int(ids[_sample_top_p(kept, params.top_p, rng)])
    shifted = _keep_min_p(_keep_top_k(_shifted(adjusted, params.temperature), params.top_k), params.min_p)
    if params.top_p >= 1.0:
        return _sample_all(shifted, rng)
    return _sample_top_p(shifted, params.top_p, rng)


def _sample_all(logprobs: np.ndarray, rng: np.random.Generator) -> int:
    """Sample from every token (no nucleus), by its probability: one cumulative sum in id order,
    where ordering the whole vocabulary by likelihood first, as a nucleus needs, took 7 ms."""
    cumulative = np.cumsum(np.exp(logprobs))
    draw = rng.random() * cumulative[-1]
    return int(min(np.searchsorted(cumulative, draw, side="right"), cumulative.shape[0] - 1))


def _shifted(logits: np.ndarray, temperature: float) -> np.ndarray:
    """logits / temperature less their maximum, in float64: log-probabilities up to a constant,
    which is all top-k, min-p and top-p need (they compare tokens with each other), without the
    normalising passes over the vocabulary."""
    scaled = np.divide(logits, temperature, dtype=np.float64)
    scaled -= scaled.max()
    return scaled


CANDIDATE_BLOCK = 512
"""Ids per candidate block (for a small k): also the block of the engine's logit statistics
(engine/tvm_backend/logit_stats.py), so that their maxima serve as the candidates."""
_CANDIDATE_SHARE = 8
"""Blocks outnumber k at least this many times over (they shrink for a larger k), so that the
candidates are at most about an eighth of the vocabulary."""


def _candidate_block(vocab: int, k: int) -> int:
    """Ids per candidate block for the k largest: CANDIDATE_BLOCK, halved while the blocks
    number under _CANDIDATE_SHARE * k."""
    block = CANDIDATE_BLOCK
    while block > 16 and vocab // block < _CANDIDATE_SHARE * k:
        block //= 2
    return block


def _top_candidates(values: np.ndarray, k: int) -> list[np.ndarray]:
    """Per row, ids that surely hold its k largest values (ties included): the blocks of ids
    (_candidate_block) whose maxima are among the row's k largest block maxima, and the ragged
    tail. Any other value lies below k block maxima, so it cannot be among the k largest. Reads
    the vocabulary once, instead of the several passes an argpartition takes."""
    rows, vocab = values.shape
    block = _candidate_block(vocab, k)
    blocks = vocab // block
    if k <= 0:
        return [np.arange(0)] * rows
    if blocks <= k:
        return [np.arange(vocab)] * rows
    body = blocks * block
    block_max = values[:, :body].reshape(rows, blocks, block).max(axis=2)
    tail = np.arange(body, vocab)
    return [np.concatenate((ids, tail)) for ids in _leading_blocks(block_max, k, block, vocab)]


def _leading_blocks(block_max: np.ndarray, k: int, block: int, vocab: int) -> list[np.ndarray]:
    """Per row, the ids (below vocab) of the blocks whose maxima are among its k largest."""
    blocks = block_max.shape[1]
    kth = np.partition(block_max, blocks - k, axis=1)[:, blocks - k]
    offsets = np.arange(block)
    result = []
    for row in range(block_max.shape[0]):
        ids = (np.flatnonzero(block_max[row] >= kth[row])[:, None] * block + offsets).ravel()
        result.append(ids[ids < vocab])
    return result


def _keep_top_k(logprobs: np.ndarray, k: int) -> np.ndarray:
    """Only the k most likely tokens stay (ties at the k-th value stay too, as in transformers)."""
    if k <= 0 or k >= logprobs.shape[0]:
        return logprobs
    kth = np.partition(logprobs, -k)[-k]
    return np.where(logprobs >= kth, logprobs, -np.inf)


def _keep_min_p(logprobs: np.ndarray, min_p: float) -> np.ndarray:
    """Tokens at least min_p times as likely as the most likely one stay (it always does)."""
    if min_p <= 0:
        return logprobs
    return np.where(logprobs >= logprobs.max() + np.log(min_p), logprobs, -np.inf)


def _penalise(logits: np.ndarray, penalty: float, previous_ids: Iterable[int]) -> np.ndarray:
    if penalty == 1.0:
        return logits
    # A set rather than np.unique, whose first call imports numpy.ma (tens of ms at start-up).
    seen = np.fromiter(set(previous_ids), dtype=np.int64)
    if seen.size == 0:
        return logits
    adjusted = logits.copy()
    values = adjusted[seen]
    adjusted[seen] = np.where(values > 0, values / penalty, values * penalty)
    return adjusted


def _sample_top_p(logprobs: np.ndarray, top_p: float, rng: np.random.Generator) -> int:
    """Sample from the smallest set of most likely tokens whose mass reaches top_p (tokens top-k
    or min-p dropped, at -inf, never). Ties go to the lower id first, as argmax does. The
    log-probabilities may be off by a constant (at most 0, so exp cannot overflow)."""
    probs = np.exp(logprobs)
    target = min(top_p, 1.0) * probs.sum()
    available = int(np.isfinite(logprobs).sum())
    # The nucleus is usually a few hundred tokens: sort a growing candidate set, not the vocabulary.
    size = min(available, _FIRST_CANDIDATES)
    while True:
        order = _most_likely_first(logprobs, size)
        cumulative = np.cumsum(probs[order])
        keep = min(int(np.searchsorted(cumulative, target, side="left")) + 1, size)
        # Exact once the nucleus ends before the candidates' lowest value (a tie there could
        # reorder with a token left outside), or when every token is a candidate.
        if size == available or logprobs[order[keep - 1]] > logprobs[order[-1]]:
            break
        size = min(available, size * 8)
    kept = cumulative[:keep]
    draw = rng.random() * kept[-1]
    return int(order[min(int(np.searchsorted(kept, draw, side="right")), keep - 1)])


def _most_likely_first(logprobs: np.ndarray, size: int) -> np.ndarray:
    """The ids of the `size` most likely tokens, best first, ties by lower id."""
    if size < logprobs.shape[0]:
        candidates = np.argpartition(-logprobs, size - 1)[:size]
    else:
        candidates = np.arange(logprobs.shape[0])
    return candidates[np.lexsort((candidates, -logprobs[candidates]))]
