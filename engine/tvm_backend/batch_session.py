"""Many sequences in one paged KV cache: add and remove them by id, fork one from another's
cached prefix, prefill one sequence a chunk at a time, and decode one token for each of several
sequences in a single batched step.

It runs on its own VM over a ModelSession's loaded library and weights (no second copy)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from engine import sampling
from engine.errors import EngineError
from engine.tvm_backend import ffi_runtime
from engine.tvm_backend.session import (
    PAGE_SIZE,
    KVBuiltins,
    LogitReader,
    ModelSession,
    create_paged_kv_cache,
    tvm_errors,
    vocabulary_ids,
)


RETAINED = 1
"""Sequences held beside the decoded ones, never decoded themselves: a prompt kept for its prefix."""


class BatchSession:
    """Up to `max_sequences` decoded sequences (and RETAINED more held) sharing `kv_tokens` cache
    positions. Callers keep each sequence within the positions they reserved for it; this class
    checks ids and vocabulary."""

    def __init__(self, session: ModelSession, max_sequences: int, kv_tokens: int, prefill_chunk: int) -> None:
        self.hidden_size = session.hidden_size
        self.vocab_rows = session.vocab_rows
        self.max_sequences = max_sequences
        self.prefill_chunk = prefill_chunk
        self.device = session.device
        self._params = session.params
        self._lengths: dict[int, int] = {}
        with tvm_errors("starting the batched session"):
            vm = self._vm = ffi_runtime.load_vm(session.library, session.device)
            self._embed = vm["embed"]
            self._prefill = vm["prefill"]
            self._decode = vm["decode"]
            try:
                self._batch_decode = vm["batch_decode"]
            except Exception as error:  # noqa: BLE001  (a library built before batch_decode existed)
                raise EngineError(
                    "The compiled model has no batch_decode function; delete the compile cache and restart."
                ) from error
            # Each sequence may leave its last page partly empty: room for that on top.
            slack = (max_sequences + RETAINED) * PAGE_SIZE
            self._kv = create_paged_kv_cache(vm, max_sequences, kv_tokens + slack, prefill_chunk)
            self._kv_ops = KVBuiltins.lookup()
            self._logits = LogitReader(vm, self.vocab_rows, self._kv_ops.reshape)

    def length(self, sequence_id: int) -> int:
        """Tokens cached for a sequence."""
        return self._lengths[sequence_id]

    def add(self, sequence_id: int) -> None:
        self._check_new(sequence_id)
        with tvm_errors("adding a sequence to the KV cache"):
            self._kv_ops.add_sequence(self._kv, sequence_id)
        self._lengths[sequence_id] = 0

    def fork(self, parent_id: int, sequence_id: int, length: int) -> None:
        """A new sequence whose cache starts as the parent's first `length` tokens: their pages
        are shared, not recomputed (a partly filled last page is copied)."""
        self._check_new(sequence_id)
        if parent_id not in self._lengths:
            raise EngineError(f"Sequence {parent_id} is not in the batch; add it first.")
        if not 0 < length <= self._lengths[parent_id]:
            raise EngineError(f"Sequence {parent_id} holds {self._lengths[parent_id]} tokens; cannot fork at {length}.")
        with tvm_errors("forking a sequence in the KV cache"):
            self._kv_ops.fork_sequence(self._kv, parent_id, sequence_id, length)
        self._lengths[sequence_id] = length

    def _check_new(self, sequence_id: int) -> None:
        if sequence_id in self._lengths:
            raise EngineError(f"Sequence {sequence_id} is already in the batch.")
        if len(self._lengths) >= self.max_sequences + RETAINED:
            raise EngineError(f"The batch already holds {self.max_sequences + RETAINED} sequences.")

    def remove(self, sequence_id: int) -> None:
        """Free a sequence's pages (nothing happens for an unknown id)."""
        if self._lengths.pop(sequence_id, None) is None:
            return
        with tvm_errors("removing a sequence from the KV cache"):
            self._kv_ops.remove_sequence(self._kv, sequence_id)

    def prefill(self, sequence_id: int, token_ids: Sequence[int]) -> np.ndarray:
        """Append up to prefill_chunk tokens to one sequence; the logits after the last one."""
        if not 0 < len(token_ids) <= self.prefill_chunk:
            raise EngineError(f"A prefill chunk holds 1 to {self.prefill_chunk} tokens, not {len(token_ids)}.")
        ids = vocabulary_ids(token_ids, self.vocab_rows)
        logits, _ = self._forward([sequence_id], ids, [len(token_ids)], self._prefill)
        return logits.reshape(-1)

    def prefill_many(self, sequence_ids: Sequence[int], chunks: Sequence[Sequence[int]]) -> None:
        """Append a chunk to each of several sequences in one ragged call (prefill_chunk tokens
        in all at most). No logits: callers feed each prompt's last token through decode, which
        gives every row's logits, so newcomers join the batch in two calls, not two per prompt."""
        total = sum(len(chunk) for chunk in chunks)
        if len(sequence_ids) != len(chunks) or not sequence_ids or any(not chunk for chunk in chunks):
            raise EngineError("A batched prefill takes one non-empty chunk for each of one or more sequences.")
        if len(set(sequence_ids)) != len(sequence_ids):
            raise EngineError("A batched prefill takes each sequence once.")
        if total > self.prefill_chunk:
            raise EngineError(f"A prefill call holds 1 to {self.prefill_chunk} tokens, not {total}.")
        ids = vocabulary_ids([token for chunk in chunks for token in chunk], self.vocab_rows)
        self._forward(sequence_ids, ids, [len(chunk) for chunk in chunks], self._prefill)

    def decode(self, sequence_ids: Sequence[int], token_ids: Sequence[int]) -> np.ndarray:
        """Append one token to each sequence, all in one step; logits [len(sequence_ids), vocab].
        A lone sequence takes the one-row decode kernels, as ModelSession does (faster than the
        many-row ones for a single row; the logits agree to about 1e-5)."""
        return self.decode_for_sampling(sequence_ids, token_ids, stats=False)[0]

    def decode_for_sampling(
        self, sequence_ids: Sequence[int], token_ids: Sequence[int], stats: bool = True
    ) -> tuple[np.ndarray, sampling.BlockStats | None]:
        """decode(), with the logits' block statistics where the library computes them (for
        sampling.sample_rows' `stats`)."""
        if len(sequence_ids) != len(token_ids) or not sequence_ids:
            raise EngineError("A batched decode takes one token for each of one or more sequences.")
        function = self._decode if len(sequence_ids) == 1 else self._batch_decode
        ids = vocabulary_ids(token_ids, self.vocab_rows)
        return self._forward(sequence_ids, ids, [1] * len(token_ids), function, stats)

    def _forward(
        self, sequence_ids: Sequence[int], ids: np.ndarray, lengths: Sequence[int], function, stats: bool = False
    ) -> tuple[np.ndarray, sampling.BlockStats | None]:
        unknown = [s for s in sequence_ids if s not in self._lengths]
        if unknown:
            raise EngineError(f"Sequence {unknown[0]} is not in the batch; add it first.")
        rows, shape = len(sequence_ids), ffi_runtime.shape([1, len(ids), self.hidden_size])
        if function is self._batch_decode:  # one row per sequence, not one ragged sequence
            shape = ffi_runtime.shape([rows, 1, self.hidden_size])
        with tvm_errors("running the model"):
            embedded = self._kv_ops.reshape(self._embed(ffi_runtime.upload(ids, self.device), self._params), shape)
            self._kv_ops.begin_forward(
                self._kv, ffi_runtime.shape(list(sequence_ids)), ffi_runtime.shape(list(lengths))
            )
            # prefill and decode also return the final hidden state; batch_decode does not.
            logits = function(embedded, self._kv, self._params)[0]
            self._kv_ops.end_forward(self._kv)
            result = self._logits.read(logits, rows if function is self._batch_decode else 1, stats)
        for sequence_id, length in zip(sequence_ids, lengths):
            self._lengths[sequence_id] += length
        return result
