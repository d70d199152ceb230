"""Hybrid speculative decoding: the local model drafts k tokens, a verifier (vLLM or `tandem
serve`) scores prefix + draft in one pass, and the turn keeps the longest accepted prefix plus the
verifier's own next token. Greedy acceptance is exact: the output is token for token the
verifier's greedy output. k adapts to the measured acceptance rate and round cost.

Sampling (temperature > 0) uses the speculative-sampling rule (Leviathan et al. 2023): accept a
drafted x with probability min(1, p(x)/q(x)), else draw from max(0, p - q). The verifier sends
only its top alternatives (20), so p is its temperature-scaled distribution renormalised over
those: exact for top-20 sampling at the verifier, an approximation of full sampling."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from engine import sampling
from engine.stopping import StopChecker
from offload.verifier import TOP_LOGPROBS, Scores, VerifierClient, VerifierError

if TYPE_CHECKING:
    from engine.api import Engine
    from engine.tvm_backend.runtime import TVMEngine

PROBE_TEXT = "Tandem's probe: naïve café, 12,345 tokens — ¿sí? 🙂 def f(x): return x**2\n"
"""Text both sides tokenize before the first round: words, digits, accents, emoji and code."""


class TokenizerMismatch(VerifierError):
    """Draft and verifier tokenize differently; their token ids cannot be compared."""


@dataclass(frozen=True)
class HybridToken:
    text: str
    token_id: int
    logprob: float
    verified: bool
    """False once the verifier was lost and the local model carries on alone."""


@dataclass(frozen=True)
class VerifierLost:
    message: str


@dataclass
class HybridStats:
    rounds: int = 0
    """Verifier passes (scoring calls)."""
    drafted: int = 0
    accepted: int = 0
    verified_tokens: int = 0
    """Tokens emitted under the verifier: accepted drafts plus its own tokens."""
    round_s: list[float] = field(default_factory=list)
    draft_s: float = 0.0

    @property
    def acceptance(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0

    @property
    def passes_saved(self) -> int:
        """Verifier passes the turn did not need compared with the verifier generating alone."""
        return max(0, self.verified_tokens - self.rounds)

    @property
    def tokens_per_pass(self) -> float:
        return self.verified_tokens / self.rounds if self.rounds else 0.0


@dataclass
class HybridTotals:
    """Hybrid turns added up (what settings show)."""

    turns: int = 0
    drafted: int = 0
    accepted: int = 0
    passes_saved: int = 0

    def add(self, stats: HybridStats) -> None:
        self.turns += 1
        self.drafted += stats.drafted
        self.accepted += stats.accepted
        self.passes_saved += stats.passes_saved

    def summary(self) -> str:
        if not self.turns:
            return "no hybrid turns yet"
        rate = self.accepted / self.drafted if self.drafted else 0.0
        return f"{self.turns} hybrid turns: {rate:.0%} of drafts accepted, {self.passes_saved} verifier passes saved"


@dataclass(frozen=True)
class HybridFinish:
    reason: str
    """"stop", "length" or "cancelled"."""
    prompt_tokens: int
    completion_tokens: int
    stats: HybridStats


HybridEvent = HybridToken | VerifierLost | HybridFinish


class AdaptiveK:
    """Chooses the draft length that maximises expected tokens per second: a round with per-token
    acceptance a yields (1 - a^(k+1)) / (1 - a) tokens and costs round_s + k * draft_s."""

    def __init__(self, k: int = 4, k_min: int = 1, k_max: int = 12, prior: float = 0.7, prior_weight: float = 4.0):
        self.k, self.k_min, self.k_max = k, k_min, k_max
        self._accepted = prior * prior_weight
        self._trials = prior_weight
        self._round_s: float | None = None
        self._draft_s: float | None = None

    @property
    def acceptance(self) -> float:
        """Per-token acceptance (a geometric model: accepted over accepted plus rejections)."""
        return self._accepted / self._trials

    def observe(self, accepted: int, rejected: bool, round_s: float, draft_s_per_token: float) -> int:
        self._accepted += accepted
        self._trials += accepted + (1 if rejected else 0)
        self._round_s = round_s if self._round_s is None else 0.7 * self._round_s + 0.3 * round_s
        self._draft_s = draft_s_per_token if self._draft_s is None else 0.7 * self._draft_s + 0.3 * draft_s_per_token
        self.k = best_k(self.acceptance, self._round_s, self._draft_s, self.k_min, self.k_max)
        return self.k


def expected_tokens(acceptance: float, k: int) -> float:
    """Tokens one round yields: the accepted drafts plus the verifier's own token."""
    a = min(max(acceptance, 0.0), 0.999)
    return (1 - a ** (k + 1)) / (1 - a)


def best_k(acceptance: float, round_s: float, draft_s: float, k_min: int = 1, k_max: int = 12) -> int:
    return max(range(k_min, k_max + 1), key=lambda k: expected_tokens(acceptance, k) / (round_s + k * draft_s))


class HybridDecoder:
    """Drafts on a TVMEngine's session (holding its lock while drafting) and verifies remotely."""

    def __init__(self, engine: Engine, verifier: VerifierClient, k: AdaptiveK | None = None) -> None:
        if getattr(engine, "session", None) is None or not hasattr(engine, "prompt_ids"):
            raise VerifierError("Hybrid decoding needs Tandem's own TVM runtime as the drafting model.")
        # Checked just above by what it offers (a stand-in with a session and prompt_ids will do).
        self.engine = cast("TVMEngine", engine)
        self.verifier = verifier
        self.k = k or AdaptiveK()

    def check_tokenizers(self, probe: str = PROBE_TEXT) -> None:
        local = self.engine.tokenizer.encode(probe)
        remote = self.verifier.tokenize(probe)
        if local != remote:
            at = next((i for i, (a, b) in enumerate(zip(local, remote)) if a != b), min(len(local), len(remote)))
            raise TokenizerMismatch(
                f"The verifier at {self.verifier.host} tokenizes text differently from the local model "
                f"(they part at token {at} of a probe), so it cannot check this model's drafts. "
                "Pair models of one family that share a tokenizer (e.g. SmolLM2-135M with SmolLM2-1.7B)."
            )

    def generate(
        self,
        prompt_ids: Sequence[int],
        max_tokens: int,
        temperature: float = 0.0,
        seed: int | None = None,
        cancel: threading.Event | None = None,
    ) -> Iterator[HybridEvent]:
        cancel = cancel or threading.Event()
        engine = self.engine
        window = engine.context_window
        template = engine.chat_config.conv_template
        stops = StopChecker(template.stop_str, (*template.stop_token_ids, *engine.chat_config.eos_token_ids))
        detokenizer = engine.tokenizer.streamer()
        rng = sampling.make_rng(seed)
        stats = HybridStats()
        prompt = list(prompt_ids)
        out: list[int] = []
        budget = min(max_tokens, window - len(prompt) - 1)
        verified = True
        reason = "length"
        while len(out) < budget and reason == "length":
            if cancel.is_set():
                reason = "cancelled"
                break
            k = max(1, min(self.k.k if verified else 8, budget - len(out), window - len(prompt) - len(out) - 2))
            started = time.perf_counter()
            draft, q_rows = self._draft(prompt + out, k, temperature, rng, stops)
            draft_s = time.perf_counter() - started
            stats.draft_s += draft_s
            if verified:
                try:
                    started = time.perf_counter()
                    top = 1 if temperature <= 0 else TOP_LOGPROBS
                    scores = self.verifier.score(prompt + out + draft, first=len(prompt) + len(out), top=top)
                    round_s = time.perf_counter() - started
                except VerifierError as error:
                    if cancel.is_set():  # the cancel cut the connection: not a verifier failure
                        reason = "cancelled"
                        break
                    verified = False
                    yield VerifierLost(str(error))
                    continue  # redraft the same position alone
                accepted, chosen = _accept(draft, q_rows, scores, temperature, rng)
                stats.rounds += 1
                stats.round_s.append(round_s)
                stats.drafted += len(draft)
                stats.accepted += accepted
                self.k.observe(accepted, accepted < len(draft), round_s, draft_s / max(1, len(draft)))
                emitted = [*draft[:accepted], chosen]
                logprobs = [scores.rows[j].get(t, float("nan")) for j, t in enumerate(draft[:accepted])]
                logprobs.append((scores.rows[accepted] if accepted < len(draft) else scores.next_row).get(chosen, float("nan")))
            else:
                emitted = draft
                logprobs = [float(q[t]) for q, t in zip(q_rows, draft)]
            for token, logprob in zip(emitted, logprobs):
                if len(out) >= budget:
                    break
                out.append(token)
                if verified:
                    stats.verified_tokens += 1
                if stops.is_stop_token(token):
                    reason = "stop"
                    break
                text = stops.push(detokenizer.push(token))
                if len(out) == budget and not stops.stopped:
                    text += stops.push(detokenizer.finish()) + stops.flush()
                if text or not stops.stopped:
                    yield HybridToken(text, token, logprob, verified)
                if stops.stopped:
                    reason = "stop"
                    break
        yield HybridFinish(reason, len(prompt), len(out), stats)

    def _draft(
        self, context: list[int], k: int, temperature: float, rng: np.random.Generator, stops: StopChecker
    ) -> tuple[list[int], list[np.ndarray]]:
        """k tokens from the local model (fewer if it drafts a stop token), with its
        temperature-scaled log-probabilities at each (for the sampling rule)."""
        engine = self.engine
        draft: list[int] = []
        rows: list[np.ndarray] = []
        with engine._lock:  # the engine's own generate() holds it too
            session = engine._require_session()  # a closed engine says so (EngineError)
            logits, _ = session.prefill_reusing_cache(context)
            for step in range(k):
                raw = sampling.log_softmax(logits)
                if temperature <= 0:
                    token = int(np.argmax(raw))
                    rows.append(raw)
                else:
                    scaled = sampling.log_softmax(np.asarray(logits, dtype=np.float64) / temperature)
                    token = int(rng.choice(scaled.shape[0], p=np.exp(scaled)))
                    rows.append(scaled)
                draft.append(token)
                if stops.is_stop_token(token) or step == k - 1:
                    break
                logits = session.decode(token)
        return draft, rows


def _accept(
    draft: list[int], q_rows: list[np.ndarray], scores: Scores, temperature: float, rng: np.random.Generator
) -> tuple[int, int]:
    """(how many drafted tokens are kept, the token that follows them)."""
    for j, token in enumerate(draft):
        row = scores.rows[j]
        if temperature <= 0:
            best = max(row.items(), key=lambda item: item[1])[0]  # first of equals: best-first order
            if token != best:
                return j, best
            continue
        ids, p = _scaled(row, temperature)
        p_x = float(p[ids.index(token)]) if token in ids else 0.0
        q_x = float(np.exp(q_rows[j][token]))
        if rng.random() < min(1.0, p_x / max(q_x, 1e-30)):
            continue
        q = np.exp(q_rows[j][ids])
        residual = np.maximum(p - q, 0.0)
        weights = residual / residual.sum() if residual.sum() > 0 else p
        return j, ids[int(rng.choice(len(ids), p=weights))]
    if temperature <= 0:
        return len(draft), scores.next_token
    ids, p = _scaled(scores.next_row, temperature)
    return len(draft), ids[int(rng.choice(len(ids), p=p))]


def _scaled(row: dict[int, float], temperature: float) -> tuple[list[int], np.ndarray]:
    """The verifier's alternatives at this temperature, renormalised over those it sent."""
    ids = list(row)
    logits = np.array([row[i] for i in ids], dtype=np.float64) / temperature
    weights = np.exp(logits - logits.max())
    return ids, weights / weights.sum()
