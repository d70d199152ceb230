"""Sampling: raw-logit logprobs and alternatives, greedy, seeded determinism, top-p."""

from __future__ import annotations

import numpy as np
import pytest

from engine.sampling import SamplingParams, log_softmax, make_rng, sample, sample_rows, top_alternatives


def random_logits(seed: int = 0, size: int = 300) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 3, size=size).astype(np.float32)


def test_log_softmax_is_stable_and_normalised():
    logprobs = log_softmax(np.array([1000.0, 1000.0, -1000.0], dtype=np.float32))
    assert logprobs.dtype == np.float64
    np.testing.assert_allclose(logprobs[:2], np.log(0.5))
    assert np.isclose(np.exp(logprobs).sum(), 1.0)


def test_greedy_picks_the_argmax_with_raw_logprob_and_alternatives():
    logits = random_logits()
    result = sample(logits, SamplingParams(temperature=0.0), make_rng(0))
    raw = log_softmax(logits)
    assert result.token_id == int(np.argmax(logits))
    assert result.logprob == pytest.approx(raw.max())
    assert [t for t, _ in result.alternatives] == list(np.argsort(-raw)[:5])
    assert result.alternatives[0] == (result.token_id, result.logprob)


def test_logprobs_come_from_raw_logits_whatever_the_temperature():
    logits = random_logits(1)
    raw = log_softmax(logits)
    for temperature in (0.3, 1.0, 2.5):
        result = sample(logits, SamplingParams(temperature=temperature), make_rng(5))
        assert result.logprob == pytest.approx(raw[result.token_id])
        # The same tokens; float32 logits are normalised in float32 (summed in float64).
        expected = top_alternatives(raw)
        assert [t for t, _ in result.alternatives] == [t for t, _ in expected]
        assert [lp for _, lp in result.alternatives] == pytest.approx([lp for _, lp in expected], abs=1e-6)


def test_same_seed_same_tokens_different_seed_different_tokens():
    logits = random_logits(2) / 6  # flat enough that sampling varies
    params = SamplingParams(temperature=1.0, top_p=0.95)

    def run(seed):
        rng = make_rng(seed)
        return [sample(logits, params, rng).token_id for _ in range(40)]

    assert run(7) == run(7)
    assert run(7) != run(8)


def test_tiny_top_p_equals_greedy():
    for seed in range(5):
        logits = random_logits(seed)
        greedy = sample(logits, SamplingParams(temperature=0.0), make_rng(0)).token_id
        tiny = sample(logits, SamplingParams(temperature=1.3, top_p=1e-9), make_rng(seed)).token_id
        assert tiny == greedy


def test_top_p_never_samples_outside_the_nucleus():
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    rng = make_rng(3)
    drawn = {sample(logits, SamplingParams(temperature=1.0, top_p=0.75), rng).token_id for _ in range(300)}
    assert drawn == {0, 1}


def test_sampling_follows_the_distribution():
    logits = np.log(np.array([0.6, 0.3, 0.1]))
    rng = make_rng(11)
    drawn = [sample(logits, SamplingParams(temperature=1.0), rng).token_id for _ in range(3000)]
    counts = np.bincount(drawn, minlength=3)
    np.testing.assert_allclose(counts / 3000, [0.6, 0.3, 0.1], atol=0.04)


def test_repetition_penalty_steers_away_from_seen_tokens_only_in_the_choice():
    logits = np.array([2.0, 1.9, -1.0])
    params = SamplingParams(temperature=0.0, repetition_penalty=1.5)
    result = sample(logits, params, make_rng(0), previous_ids=[0])
    assert result.token_id == 1
    assert result.logprob == pytest.approx(log_softmax(logits)[1])


# -- top-k, min-p, the repetition penalty over the sequence, and the request's settings ----------


@pytest.mark.parametrize("temperature", [0.5, 1.0, 3.0])
def test_top_k_of_one_is_greedy(temperature):
    for seed in range(20):
        logits = random_logits(seed)
        rng = make_rng(seed)
        chosen = sample(logits, SamplingParams(temperature=temperature, top_k=1), rng).token_id
        assert chosen == int(np.argmax(logits))


def test_top_k_never_samples_outside_the_k_most_likely():
    logits = random_logits(3)
    rng = make_rng(0)
    drawn = {sample(logits, SamplingParams(temperature=5.0, top_k=4), rng).token_id for _ in range(400)}
    assert drawn == set(np.argsort(-logits)[:4].tolist())  # all four reached at a high temperature, none else


def test_min_p_drops_tokens_below_its_share_of_the_best():
    probs = np.array([0.5, 0.3, 0.15, 0.05])
    logits = np.log(probs)
    rng = make_rng(4)
    drawn = [sample(logits, SamplingParams(temperature=1.0, min_p=0.2), rng).token_id for _ in range(4000)]
    counts = np.bincount(drawn, minlength=4) / 4000
    assert counts[3] == 0  # 0.05 < 0.2 * 0.5
    np.testing.assert_allclose(counts[:3], probs[:3] / probs[:3].sum(), atol=0.03)  # the rest renormalised
    assert {sample(logits, SamplingParams(min_p=0.55), rng).token_id for _ in range(400)} == {0, 1}
    assert {sample(logits, SamplingParams(min_p=0.65), rng).token_id for _ in range(100)} == {0}


def test_min_p_and_top_k_keep_the_logprobs_raw():
    logits = random_logits(5)
    result = sample(logits, SamplingParams(temperature=0.8, top_k=3, min_p=0.1), make_rng(0))
    assert result.logprob == pytest.approx(log_softmax(logits)[result.token_id])


def _looping_model(previous: int) -> np.ndarray:
    """Logits of a toy bigram model whose greedy path loops 0 -> 1 -> 2 -> 0 ...; the runner-up
    after each token is 3 + that token, a little behind."""
    logits = np.full(8, -5.0)
    logits[(previous + 1) % 3] = 2.0
    logits[3 + previous % 5] = 1.5
    return logits


def _greedy_run(params: SamplingParams, steps: int = 12) -> list[int]:
    sequence = [0]
    for _ in range(steps):
        sequence.append(sample(_looping_model(sequence[-1]), params, make_rng(0), sequence).token_id)
    return sequence


def test_repetition_penalty_breaks_a_looping_greedy_sequence():
    plain = _greedy_run(SamplingParams(temperature=0.0))
    assert plain == [0, 1, 2] * 4 + [0]
    penalised = _greedy_run(SamplingParams(temperature=0.0, repetition_penalty=1.5))
    assert penalised != plain
    assert len(set(penalised)) > len(set(plain))


def test_a_request_setting_replaces_the_models_default_and_none_keeps_it():
    from engine.api import GenerationRequest

    defaults = SamplingParams(temperature=0.6, top_p=0.9, top_k=20, min_p=0.05, repetition_penalty=1.1)
    assert defaults.with_request(GenerationRequest(messages=())) == defaults
    chosen = defaults.with_request(GenerationRequest(messages=(), temperature=0.0, top_k=0))
    assert (chosen.temperature, chosen.top_k, chosen.top_p, chosen.repetition_penalty) == (0.0, 0, 0.9, 1.1)


def _top_p_by_full_sort(logprobs, top_p, rng):
    """The nucleus by sorting the whole vocabulary: the reference for the candidate-set search."""
    order = np.argsort(-logprobs, kind="stable")
    order = order[np.isfinite(logprobs[order])]
    cumulative = np.cumsum(np.exp(logprobs[order]))
    keep = int(np.searchsorted(cumulative, top_p * cumulative[-1], side="left")) + 1
    draw = rng.random() * cumulative[keep - 1]
    return int(order[min(int(np.searchsorted(cumulative[:keep], draw, side="right")), keep - 1)])


def test_top_p_draws_what_sorting_the_whole_vocabulary_draws():
    from engine.sampling import _sample_top_p

    for seed in range(200):
        g = np.random.default_rng(seed)
        logits = g.normal(0, g.uniform(0.5, 8), int(g.integers(5, 40_000)))
        if seed % 4 == 0:
            logits = np.round(logits)  # many ties, some at the candidate boundary
        logprobs = log_softmax(logits)
        if seed % 3 == 0:  # what top-k left
            kth = np.partition(logprobs, -10)[-10] if logprobs.size > 10 else logprobs.min()
            logprobs = np.where(logprobs >= kth, logprobs, -np.inf)
        top_p = float(g.choice([0.5, 0.9, 0.99, 1.0]))
        assert _sample_top_p(logprobs, top_p, make_rng(seed)) == _top_p_by_full_sort(logprobs, top_p, make_rng(seed))


def test_rows_sampled_together_equal_rows_sampled_one_at_a_time():
    vocab = 49152  # a real vocabulary: the alternatives come from candidate blocks
    logits = np.stack([random_logits(seed, vocab) for seed in range(5)])
    logits[1, [7, 900, 40000]] = logits[1].max() + 1  # ties for the top: lower ids first
    settings = [
        SamplingParams(temperature=0.0),
        SamplingParams(temperature=0.0),
        SamplingParams(temperature=0.8, top_p=0.9),
        SamplingParams(temperature=0.0, repetition_penalty=1.3),
        SamplingParams(temperature=1.0, top_k=20, min_p=0.05, top_k_alternatives=3),
    ]
    history = [1, 2, 3, int(np.argmax(logits[3]))]
    together = sample_rows(logits, settings, [make_rng(row) for row in range(5)], [history] * 5)
    alone = [sample(logits[row], settings[row], make_rng(row), history) for row in range(5)]
    assert together == alone
    assert [t for t, _ in together[1].alternatives[:3]] == [7, 900, 40000]
    for row, choice in enumerate(together):
        raw = log_softmax(logits[row])
        order = np.lexsort((np.arange(vocab), -raw))[: settings[row].top_k_alternatives]
        assert [t for t, _ in choice.alternatives] == order.tolist()
        assert choice.logprob == pytest.approx(raw[choice.token_id], abs=1e-6)
    assert together[3].token_id != history[-1]  # the penalty applied to its row only


def _full_vocabulary_pick(logits: np.ndarray, params: SamplingParams, rng, previous_ids) -> int:
    """The whole-vocabulary pipeline: penalty, softmax over every token, top-k, min-p, top-p."""
    from engine.sampling import _keep_min_p, _keep_top_k, _penalise, _sample_top_p

    logprobs = log_softmax(_penalise(logits.astype(np.float64), params.repetition_penalty, previous_ids) / params.temperature)
    return _sample_top_p(_keep_min_p(_keep_top_k(logprobs, params.top_k), params.min_p), params.top_p, rng)


def test_a_top_k_draw_over_the_k_most_likely_equals_the_whole_vocabulary_draw():
    """With a top-k the sampler only softmaxes the k most likely tokens (and those tied with the
    k-th): the same tokens for the same seeds as the whole vocabulary's pipeline, penalties too.
    Where many logits are exactly equal a nucleus edge can fall on a rounding boundary (the two
    sum in different orders: 7 draws in 500 moved there), so tied rows only stay in the top k."""
    for seed in range(400):
        g = np.random.default_rng(seed)
        vocab = int(g.integers(2_000, 50_000))
        logits = g.normal(0, g.uniform(0.5, 6), vocab).astype(np.float32)
        tied = seed % 4 == 0
        if tied:
            logits = np.round(logits)
        params = SamplingParams(
            temperature=float(g.choice([0.3, 0.8, 1.5])),
            top_k=int(g.choice([1, 5, 40, 100])),
            top_p=float(g.choice([0.5, 0.95, 1.0])),
            min_p=float(g.choice([0.0, 0.05])),
            repetition_penalty=float(g.choice([1.0, 1.3])),
        )
        history = g.integers(0, vocab, 30).tolist()
        chosen = sample(logits, params, make_rng(seed), history).token_id
        if not tied:
            assert chosen == _full_vocabulary_pick(logits, params, make_rng(seed), history), (seed, params)
        else:
            from engine.sampling import _penalise

            adjusted = _penalise(logits.astype(np.float64), params.repetition_penalty, history)
            assert adjusted[chosen] >= np.sort(adjusted)[-params.top_k], (seed, params)


def test_no_alternatives_asked_gives_none_and_skips_the_search():
    logits = np.stack([random_logits(seed, 49152) for seed in range(3)])
    settings = [SamplingParams(temperature=0.0, top_k_alternatives=0)] * 3
    chosen = sample_rows(logits, settings, [make_rng(r) for r in range(3)], [[]] * 3)
    assert [c.alternatives for c in chosen] == [(), (), ()]
    assert [c.token_id for c in chosen] == [int(np.argmax(row)) for row in logits]
