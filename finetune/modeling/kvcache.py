"""A key/value cache for decoding that does not copy itself at every new token.

transformers' DynamicCache appends each token's keys and values with `torch.cat`, which
copies the whole cache at every step: on a CPU, decoding a batch of long replies, that copy
is a large share of each step ("Decoding replies in rounds" in docs/benchmarks.md). The
layer here writes each token into spare room at the end of its buffer and doubles the room
when it runs out; attention reads a view of the filled part, so it computes exactly what it
did before.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.cache_utils import DynamicCache, DynamicLayer


class GrowingLayer(DynamicLayer):
    """A full-attention cache layer whose keys and values are views of a larger buffer.
    `length`: the tokens it is expected to hold (prompt and reply), its first room; past
    that, the room doubles."""

    def __init__(self, length: int = 0):
        super().__init__()
        self.length = length
        self.room: tuple[torch.Tensor, torch.Tensor] | None = None

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        filled, new = self.get_seq_length(), key_states.shape[-2]
        if not self._writable(filled) or filled + new > self.room[0].shape[-2]:
            fits = self.room is None and self.length >= filled + new
            size = self.length if fits else 2 * (filled + new)
            self._grow(filled, key_states, value_states, size)
        end = filled + new
        keys, values = self.room
        keys[..., filled:end, :] = key_states
        values[..., filled:end, :] = value_states
        self.keys, self.values = keys[..., :end, :], values[..., :end, :]
        return self.keys, self.values

    def _writable(self, filled: int) -> bool:
        """Whether the cached keys are still the start of the buffer: a batch selection,
        a reordering or a reset replaces them with other tensors (a crop keeps a view)."""
        if self.room is None or filled == 0:
            return False
        keys = self.room[0]
        return self.keys.data_ptr() == keys.data_ptr() and self.keys.shape[0] == keys.shape[0]

    def _grow(
        self, filled: int, key_states: torch.Tensor, value_states: torch.Tensor, size: int
    ) -> None:
        shape = (*key_states.shape[:-2], size, key_states.shape[-1])
        keys = key_states.new_empty(shape)
        values = value_states.new_empty((*shape[:-1], value_states.shape[-1]))
        if filled:
            keys[..., :filled, :] = self.keys
            values[..., :filled, :] = self.values
        self.room = (keys, values)


def growing_cache(config: Any, length: int = 0) -> DynamicCache | None:
    """The cache transformers would build for `config`, its full-attention layers replaced by
    growing ones whose first room holds `length` tokens (sliding-window and other layers stay
    as they are); None where there is none to replace: the model decodes with its own."""
    try:
        cache = DynamicCache(config=config)
    except (AttributeError, KeyError, TypeError, ValueError):
        return None
    if not any(type(layer) is DynamicLayer for layer in cache.layers):
        return None
    cache.layers = [
        GrowingLayer(length) if type(layer) is DynamicLayer else layer for layer in cache.layers
    ]
    return cache
