"""The offline guarantee: with sockets blocked, every recipe's quick run on its bundled data and
bundled model completes. Any code path that tried the network would fail here."""

from __future__ import annotations

import importlib
import json
import socket

import pytest

from finetune.registry import RECIPES


class NetworkUsed(AssertionError):
    pass


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise NetworkUsed(f"network access attempted: {args[:2]}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def test_sockets_are_really_blocked(no_network):
    with pytest.raises(NetworkUsed):
        socket.create_connection(("example.com", 80))


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_quick_run_works_with_sockets_blocked(name, no_network, tmp_path):
    recipe = importlib.import_module(RECIPES[name]).recipe
    # Two steps are enough to exercise every path (data, model, baselines, report) offline.
    config = recipe.config(quick=True, train={"max_steps": 2}, output=str(tmp_path / "run"))
    run = recipe.train(config, show_progress=False)
    metrics = json.loads((run.folder / "metrics.json").read_text())
    assert {"accuracy", "recall", "f1", "auc", "baselines"} <= set(metrics)
