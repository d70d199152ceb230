"""The sampler's block statistics of logits (engine/tvm_backend/logit_stats.py): the kernel
against numpy (whole and ragged last blocks), the sampler fed them against the sampler reading
the logits alone, and the sessions handing out statistics of the logits they return."""

from __future__ import annotations

import numpy as np
import pytest

from engine import sampling

tvm = pytest.importorskip("tvm")


def numpy_stats(logits: np.ndarray, block: int = 512) -> sampling.BlockStats:
    rows, vocab = logits.shape
    padded = np.full((rows, -(-vocab // block) * block), -np.inf, np.float32)
    padded[:, :vocab] = logits
    blocks = padded.reshape(rows, -1, block)
    maxima = blocks.max(axis=2)
    with np.errstate(invalid="ignore"):  # a block of -inf only: its sum is NaN, as the kernel's
        sums = np.exp(blocks.astype(np.float64) - maxima[..., None]).sum(axis=2)
    return sampling.BlockStats(maxima, sums.astype(np.float32), block)


@pytest.mark.parametrize("vocab", [49152, 32001])
def test_the_kernel_computes_each_blocks_maximum_and_sum_of_exp(host_target, vocab):
    from engine.tvm_backend.logit_stats import BLOCK, block_stats_kernel, blocks

    library = tvm.tirx.build(
        tvm.IRModule({"stats": block_stats_kernel(vocab).with_attr("global_symbol", "stats")}), target=host_target
    )
    rng = np.random.default_rng(vocab)
    for rows in (1, 5):
        logits = (rng.standard_normal((rows, vocab)) * 4).astype(np.float32)
        logits[-1, -1] = 60.0  # the ragged last block holds the row's maximum
        out = tvm.runtime.tensor(np.zeros((rows, blocks(vocab), 2), np.float32))
        library["stats"](tvm.runtime.tensor(logits), out)
        expected = numpy_stats(logits, BLOCK)
        np.testing.assert_array_equal(out.numpy()[..., 0], expected.maxima)
        np.testing.assert_allclose(out.numpy()[..., 1], expected.sums, rtol=2e-6)


@pytest.mark.parametrize("vocab", [49152, 32001])
def test_sampling_with_block_stats_equals_sampling_the_logits_alone(vocab):
    rng = np.random.default_rng(vocab)
    logits = (rng.standard_normal((6, vocab)) * 3).astype(np.float32)
    logits[1, [7, 900, 3000]] = logits[1].max() + 1  # ties for the top: the lowest id wins
    logits[2, -1] = logits[2].max() + 2  # the maximum in the ragged last block
    logits[5, 512:1024] = -np.inf  # a whole block masked
    settings = [
        sampling.SamplingParams(temperature=0.0),
        sampling.SamplingParams(temperature=0.0),
        sampling.SamplingParams(temperature=0.0, top_k_alternatives=3),
        sampling.SamplingParams(temperature=0.8, top_k=40, top_p=0.95),
        sampling.SamplingParams(temperature=0.0, repetition_penalty=1.3),
        sampling.SamplingParams(temperature=1.0),
    ]
    history = [[1, 2, 3]] * 6
    alone = sampling.sample_rows(logits, settings, [sampling.make_rng(r) for r in range(6)], history)
    fed = sampling.sample_rows(logits, settings, [sampling.make_rng(r) for r in range(6)], history, numpy_stats(logits))
    assert [c.token_id for c in fed] == [c.token_id for c in alone]
    assert fed[1].token_id == 7 and fed[2].token_id == vocab - 1
    for with_stats, without in zip(fed, alone):
        assert [i for i, _ in with_stats.alternatives] == [i for i, _ in without.alternatives]
        np.testing.assert_allclose(with_stats.logprob, without.logprob, atol=1e-6)
        np.testing.assert_allclose([lp for _, lp in with_stats.alternatives], [lp for _, lp in without.alternatives], atol=1e-6)


def test_sessions_hand_out_the_block_stats_of_the_logits_they_return(tiny_mlc_model):
    from engine.loader import open_engine
    from engine.tvm_backend.batch_session import BatchSession

    engine = open_engine(tiny_mlc_model("q4f32_1", model_type="llama", tie=True), backend="tvm")
    try:
        session = engine.session
        session.reset()
        token = int(np.argmax(session.prefill([1, 2, 3, 4])))
        logits, stats = session.decode_for_sampling(token)
        assert stats is not None
        expected = numpy_stats(logits.reshape(1, -1), stats.block)
        np.testing.assert_array_equal(stats.maxima, expected.maxima)
        np.testing.assert_allclose(stats.sums, expected.sums, rtol=2e-6)

        batch = BatchSession(session, 3, 256, 16)
        for sequence in range(3):
            batch.add(sequence)
            batch.prefill(sequence, [5 + sequence, 6, 7])
        rows, stats = batch.decode_for_sampling([0, 1, 2], [8, 9, 10])
        assert stats is not None and rows.shape[0] == stats.maxima.shape[0] == 3
        np.testing.assert_array_equal(stats.maxima, numpy_stats(rows, stats.block).maxima)
    finally:
        engine.close()
