"""Driving a compiled model with its weights on the device: one paged-KV sequence, chunked
prefill and single-token decode, each returning float32 logits as numpy.

Every TVM failure surfaces as EngineError, so the host process never sees a TVM exception. Only
TVM's runtime is used here (ffi_runtime), so a warm start never imports the compiler."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine import sampling
from engine.errors import EngineError
from engine.tvm_backend import ffi_runtime
from engine.tvm_backend.compiler import CompiledModel
from engine.tvm_backend.logit_stats import BLOCK as STATS_BLOCK
from engine.tvm_backend.logit_stats import FUNCTION as LOGIT_STATS

PAGE_SIZE = 16
SCORE_CHUNK = 64
"""Rows scored per call at most: each row's logits are vocabulary-wide (49k floats for SmolLM2)."""
SEQUENCE_ID = 0


def _optional(vm, name: str):
    """An exported function the library may lack (one built before it was added)."""
    try:
        return vm[name]
    except Exception:  # noqa: BLE001  (TVM raises its own error type for a missing function)
        return None


@contextmanager
def tvm_errors(action: str):
    """Turn any TVM exception raised inside into EngineError naming `action`."""
    try:
        yield
    except EngineError:
        raise
    except Exception as error:  # TVM raises its own error types; callers get one
        raise EngineError(
            f"The local model failed while {action} ({type(error).__name__}: {error}). "
            "Restart Tandem; if it persists, delete the compile cache (`tandem models` shows it)."
        ) from error


@dataclass(frozen=True)
class KVBuiltins:
    """TVM's global functions that drive a paged KV cache and shape the embeddings fed to it."""

    add_sequence: Any
    remove_sequence: Any
    begin_forward: Any
    end_forward: Any
    popn: Any
    reshape: Any
    fork_sequence: Any

    @classmethod
    def lookup(cls) -> KVBuiltins:
        """Each function looked up once (inside tvm_errors: a missing one is a TVM error)."""
        return cls(
            add_sequence=ffi_runtime.global_func("vm.builtin.kv_state_add_sequence"),
            remove_sequence=ffi_runtime.global_func("vm.builtin.kv_state_remove_sequence"),
            begin_forward=ffi_runtime.global_func("vm.builtin.kv_state_begin_forward"),
            end_forward=ffi_runtime.global_func("vm.builtin.kv_state_end_forward"),
            popn=ffi_runtime.global_func("vm.builtin.kv_state_popn"),
            reshape=ffi_runtime.global_func("vm.builtin.reshape"),
            fork_sequence=ffi_runtime.global_func("vm.builtin.kv_state_fork_sequence"),
        )


def create_paged_kv_cache(vm: Any, max_sequences: int, kv_tokens: int, prefill_chunk: int) -> Any:
    """The model's own paged KV cache: room for `kv_tokens` positions in PAGE_SIZE pages, shared
    by up to `max_sequences` sequences, taking up to `prefill_chunk` tokens per forward."""
    return vm["create_tir_paged_kv_cache"](
        ffi_runtime.shape([max_sequences]),
        ffi_runtime.shape([kv_tokens]),
        ffi_runtime.shape([prefill_chunk]),
        ffi_runtime.shape([PAGE_SIZE]),
        ffi_runtime.shape([0]),
    )


def vocabulary_ids(token_ids: Sequence[int], vocab_rows: int) -> np.ndarray:
    """The ids as int32 for the model, refusing any outside its vocabulary (a tokenizer that
    belongs to another model) before it could index past the embedding table."""
    ids = np.asarray(token_ids, dtype=np.int64)
    bad = ids[(ids < 0) | (ids >= vocab_rows)]
    if bad.size:
        raise EngineError(
            f"Token id {int(bad[0])} is outside the model's vocabulary (0..{vocab_rows - 1}); "
            "the tokenizer does not belong to this model. Convert the model again."
        )
    return ids.astype(np.int32)


class LogitReader:
    """Brings a step's logits [rows, vocab] to the host and, where the library has logit_stats
    (CPU libraries), their per-block statistics for the sampler, computed before the download."""

    def __init__(self, vm: Any, vocab_rows: int, reshape: Any) -> None:
        self.vocab_rows = vocab_rows
        self._stats = _optional(vm, LOGIT_STATS)
        self._reshape = reshape

    def read(self, logits: Any, rows: int, stats: bool) -> tuple[np.ndarray, sampling.BlockStats | None]:
        result = ffi_runtime.download(logits).reshape(rows, -1)
        if not stats or self._stats is None:
            return result, None
        blocks = ffi_runtime.download(self._stats(self._reshape(logits, ffi_runtime.shape([rows, self.vocab_rows]))))
        return result, sampling.BlockStats(blocks[..., 0], blocks[..., 1], STATS_BLOCK)


class ModelSession:
    """One sequence in a paged KV cache of `max_tokens` positions. It remembers the tokens it
    holds, so a prompt that extends the previous one (the next turn of a chat) only prefills
    what is new."""

    def __init__(
        self,
        compiled: CompiledModel,
        params: Sequence[Any],
        device: Any,
        hidden_size: int,
        vocab_rows: int,
        max_tokens: int,
        prefill_chunk: int,
    ) -> None:
        self.hidden_size = hidden_size
        self.vocab_rows = vocab_rows
        self.max_tokens = max_tokens
        self.prefill_chunk = prefill_chunk
        self.device = device
        with tvm_errors("loading the compiled library"):
            self._vm = ffi_runtime.load_vm(compiled.library, device)
            self._params = list(params)
            self.library = compiled.library
            """The compiled library: a BatchSession builds its own VM on it, sharing the weights."""
            self._embed = self._vm["embed"]
            self._prefill = self._vm["prefill"]
            self._decode = self._vm["decode"]
            self._prefill_all = _optional(self._vm, "prefill_all_logits")
            self._kv = create_paged_kv_cache(self._vm, 1, max_tokens, prefill_chunk)
            self._kv_ops = KVBuiltins.lookup()
            self._logits = LogitReader(self._vm, vocab_rows, self._kv_ops.reshape)
        self._tokens: list[int] | None = None
        """What the cache holds; None before the first reset or after a failed forward."""
        self._has_sequence = False
        """Whether the KV cache holds SEQUENCE_ID (added by reset)."""
        self._states: Any = None
        """The probe states after the last prefill or decode, [1, 2, hidden] on the device."""

    @property
    def params(self) -> list[Any]:
        """The weights on the device, in the order every exported function takes them."""
        return self._params

    @property
    def length(self) -> int:
        """Tokens in the cache for the current sequence."""
        return len(self._tokens or ())

    @property
    def tokens(self) -> tuple[int, ...]:
        """The tokens the cache holds now (empty before the first reset or after a failure)."""
        return tuple(self._tokens or ())

    def reset(self) -> None:
        """Start an empty sequence."""
        with tvm_errors("clearing the KV cache"):
            # Only a sequence that exists is removed: TVM's error for a missing one costs about
            # a second (it symbolizes a native backtrace).
            if self._has_sequence:
                self._has_sequence = False
                self._kv_ops.remove_sequence(self._kv, SEQUENCE_ID)
            self._kv_ops.add_sequence(self._kv, SEQUENCE_ID)
            self._has_sequence = True
        self._tokens = []

    def prefill_reusing_cache(self, token_ids: Sequence[int]) -> tuple[np.ndarray, int]:
        """Like reset() + prefill(token_ids), but keeps the cached prefix the two share.
        Returns the logits and how many tokens were actually computed."""
        tokens = self._tokens
        if tokens is None:  # a failed forward left the cache unknown: start over
            self.reset()
            tokens = self._tokens = []
        shared = 0
        limit = min(len(tokens), len(token_ids) - 1)  # at least one token to compute logits
        while shared < limit and tokens[shared] == token_ids[shared]:
            shared += 1
        if shared < len(tokens):
            with tvm_errors("rolling back the KV cache"):
                self._kv_ops.popn(self._kv, SEQUENCE_ID, len(tokens) - shared)
            del tokens[shared:]
        return self.prefill(token_ids[shared:]), len(token_ids) - shared

    def prefill(self, token_ids: Sequence[int]) -> np.ndarray:
        """Append tokens (in chunks of prefill_chunk); logits after the last one."""
        if not token_ids:
            raise EngineError("Nothing to prefill: the prompt encoded to no tokens.")
        starts = range(0, len(token_ids), self.prefill_chunk)
        for start in starts[:-1]:
            self._forward(token_ids[start : start + self.prefill_chunk], self._prefill)
        return self._forward(token_ids[starts[-1] :], self._prefill)[0]

    @property
    def scores_rows(self) -> bool:
        """Whether the library returns every row's logits in one pass (prefill_rows)."""
        return self._prefill_all is not None

    def prefill_rows(self, token_ids: Sequence[int]) -> np.ndarray:
        """Append tokens; the logits after each of them, [len(token_ids), vocab]."""
        if self._prefill_all is None:
            raise EngineError("This compiled model has no prefill_all_logits; delete the compile cache.")
        rows = []
        for start in range(0, len(token_ids), min(SCORE_CHUNK, self.prefill_chunk)):
            chunk = token_ids[start : start + min(SCORE_CHUNK, self.prefill_chunk)]
            rows.append(self._forward(chunk, self._prefill_all)[0].reshape(len(chunk), -1))
        return np.concatenate(rows)

    def decode(self, token_id: int) -> np.ndarray:
        """Append one token; the logits that follow it."""
        return self._forward([token_id], self._decode)[0]

    def decode_for_sampling(self, token_id: int) -> tuple[np.ndarray, sampling.BlockStats | None]:
        """decode(), with the logits' block statistics where the library computes them (for
        sampling.sample's `stats`)."""
        return self._forward([token_id], self._decode, stats=True)

    def last_hidden(self) -> np.ndarray | None:
        """The model's final hidden state (after its last norm) at the last token the latest
        prefill or decode appended, [hidden_size] float32; None after prefill_rows or a failure."""
        states = self.last_states()
        return None if states is None else states[0]

    def last_states(self) -> np.ndarray | None:
        """[2, hidden_size] float32 at the same token: the final hidden state, then the residual
        stream two thirds of the way through the model (engine.models.llama.middle_depth)."""
        if self._states is None:
            return None
        with tvm_errors("reading the hidden state"):
            return ffi_runtime.download(self._states).reshape(2, self.hidden_size).astype(np.float32)

    def _forward(self, token_ids: Sequence[int], function, stats: bool = False) -> tuple[np.ndarray, sampling.BlockStats | None]:
        ids = self._checked(token_ids)
        tokens, self._tokens = self._tokens, None  # stays None if the forward fails midway
        assert tokens is not None  # _checked raised otherwise
        self._states = None
        with tvm_errors("running the model"):
            embedded = self._embed(ffi_runtime.upload(ids, self.device), self._params)
            embedded = self._kv_ops.reshape(embedded, ffi_runtime.shape([1, len(ids), self.hidden_size]))
            self._kv_ops.begin_forward(self._kv, ffi_runtime.shape([SEQUENCE_ID]), ffi_runtime.shape([len(ids)]))
            outputs = function(embedded, self._kv, self._params)
            self._kv_ops.end_forward(self._kv)
            logits = outputs[0]
            # prefill and decode return (logits, probe states, cache): kept on the device until
            # someone asks (the router's probes read them).
            self._states = outputs[1] if len(outputs) == 3 else None
            result, block_stats = self._logits.read(logits, 1, stats)
        tokens.extend(int(i) for i in ids)
        self._tokens = tokens
        return result.reshape(-1), block_stats

    def _checked(self, token_ids: Sequence[int]) -> np.ndarray:
        if self._tokens is None:
            raise EngineError("The model session has no sequence; call reset() first.")
        ids = vocabulary_ids(token_ids, self.vocab_rows)
        if self.length + len(ids) > self.max_tokens:
            raise EngineError(
                f"The sequence would hold {self.length + len(ids)} tokens but the KV cache has room "
                f"for {self.max_tokens}; start a new conversation."
            )
        return ids
