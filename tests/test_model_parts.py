"""The model plumbing detection and distillation share (``leaf.model_parts``)."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from leaf.model_parts import execution_device


def test_execution_device_is_the_weights_unless_an_offload_hook_says_otherwise():
    layer = torch.nn.Linear(2, 3)
    assert execution_device(layer) == torch.device("cpu")
    layer._hf_hook = SimpleNamespace(execution_device="meta")  # accelerate's offload hook
    assert execution_device(layer) == torch.device("meta")
