"""Running a backbone's transformer layers in two parts: the lower ones, then the upper ones.

Running a transformers model from a middle layer is not a transformers API, so it is done by
lending the model a shorter layer list for the call (and, for encoders, an embedding module
that passes the given states through). `models.TextClassifier` runs its upper part from
cached states (layercache.py), and LoRA on the top layers finds their modules here.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn


def layer_list(model: nn.Module) -> tuple[str, nn.Module, str, nn.ModuleList]:
    """(name, parent, attribute, layers): the model's stack of transformer layers."""
    count = getattr(model.config, "num_hidden_layers", None)
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == count and name:
            parent_name, _, attribute = name.rpartition(".")
            return name, model.get_submodule(parent_name), attribute, module
    raise ValueError(f"no list of {count} layers found in this '{model.config.model_type}' model")


class _PassThrough(nn.Module):
    """Stands in for an encoder's embedding module: the cached states already are its output."""

    def forward(self, *args: Any, inputs_embeds: torch.Tensor | None = None, **kwargs: Any):
        return inputs_embeds


@contextlib.contextmanager
def _layers(model: nn.Module, start: int, stop: int | None, skip_embeddings: bool) -> Iterator:
    _, parent, attribute, layers = layer_list(model)
    embeddings = getattr(model, "embeddings", None)
    # Models with layers of several kinds (Gemma 3, Qwen 2, Mistral: sliding-window or full
    # attention, each with its own rotary base) look a layer's kind up in config.layer_types
    # by its place in the list: the shorter list gets its own layers' kinds.
    kinds = getattr(model.config, "layer_types", None)
    setattr(parent, attribute, nn.ModuleList(list(layers)[start:stop]))
    if isinstance(kinds, list) and len(kinds) == len(layers):
        model.config.layer_types = kinds[start:stop]
    if skip_embeddings and isinstance(embeddings, nn.Module):
        model.embeddings = _PassThrough()
    try:
        yield
    finally:
        setattr(parent, attribute, layers)
        if isinstance(kinds, list):
            model.config.layer_types = kinds
        if skip_embeddings and isinstance(embeddings, nn.Module):
            model.embeddings = embeddings


def lower_states(backbone: nn.Module, first: int, input_ids, attention_mask) -> torch.Tensor:
    """The states the first `first` layers hand to layer `first`."""
    model = backbone.get_base_model()
    captured: list[torch.Tensor] = []

    def keep(module: nn.Module, args: Any, output: Any) -> None:
        captured.append(output[0] if isinstance(output, tuple) else output)

    # The last lower layer's own output: a decoder's last_hidden_state has its final norm on.
    hook = layer_list(model)[3][first - 1].register_forward_hook(keep)
    try:
        with _layers(model, 0, first, skip_embeddings=False):
            model(input_ids=input_ids, attention_mask=attention_mask, **_no_cache(model))
    finally:
        hook.remove()
    return captured[-1]


def upper_states(backbone: nn.Module, first: int, states, attention_mask) -> torch.Tensor:
    """The model's last hidden state, computed from layer `first` upwards."""
    model = backbone.get_base_model()
    with _layers(model, first, None, skip_embeddings=True):
        out = model(inputs_embeds=states, attention_mask=attention_mask, **_no_cache(model))
        return out.last_hidden_state


def _no_cache(model: nn.Module) -> dict[str, bool]:
    """No key/value cache: nothing is generated, and a decoder's cache would be sized for its
    whole layer list while only part of it runs."""
    return (
        {"use_cache": False} if "use_cache" in inspect.signature(model.forward).parameters else {}
    )
