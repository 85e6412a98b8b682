"""The parts of a loaded causal LM that the fast paths work with: its body and output head, and
the device a module runs on.

Detection (:mod:`leaf.detect.saliency`) and distillation (:mod:`leaf.distill.trainer`,
:mod:`leaf.distill.fused`) both skip the ``[tokens, vocabulary]`` logits tensor by running the
model's body once and its output layer chunk by chunk. That is exact only when the model's
logits are ``head(body(...).last_hidden_state)`` and nothing else, which :func:`chunkable_head`
checks conservatively; any other model takes the plain full-logits path.
"""

from __future__ import annotations

import torch

# Architectures whose ``*ForCausalLM.forward`` returns ``lm_head(decoder(...).last_hidden_state)``
# and nothing else: the chunked paths are used only for these.
CHUNKABLE_MODEL_TYPES = frozenset(
    {"llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "phi3", "gemma"}
)
# Config fields that, when set, mean the logits are transformed after the output layer.
LOGIT_TRANSFORM_FIELDS = (
    "final_logit_softcapping",  # Gemma-2/3: tanh soft-capping
    "logit_scale",  # Cohere
    "logits_scaling",  # Granite
    "output_multiplier_scale",
    "logit_softcapping",
    "mup_width_multiplier",
)


def execution_device(module: torch.nn.Module) -> torch.device:
    """Where a module runs: its accelerate hook's device when offloaded, else its weight's."""
    hook_device = getattr(getattr(module, "_hf_hook", None), "execution_device", None)
    if hook_device is not None:
        return torch.device(hook_device)
    return module.weight.device


def chunkable_head(model) -> tuple[torch.nn.Module, torch.nn.Linear] | None:
    """``(body, head)`` when ``model``'s logits are ``head(body(...).last_hidden_state)``, else None.

    Conservative: the model must be a ``*ForCausalLM`` of an architecture in
    :data:`CHUNKABLE_MODEL_TYPES`, with no field of :data:`LOGIT_TRANSFORM_FIELDS` set in its
    config, an ``nn.Linear`` output layer and a body that is a separate submodule.
    """
    config = getattr(model, "config", None)
    if config is None or getattr(config, "model_type", None) not in CHUNKABLE_MODEL_TYPES:
        return None
    if not type(model).__name__.endswith("ForCausalLM"):
        return None
    if any(getattr(config, f, None) not in (None, 1, 1.0) for f in LOGIT_TRANSFORM_FIELDS):
        return None
    head = model.get_output_embeddings()
    if not isinstance(head, torch.nn.Linear):
        return None
    get_decoder = getattr(model, "get_decoder", None)
    body = get_decoder() if callable(get_decoder) else None
    if body is None or body is model:
        body = getattr(model, "base_model", None)
    if not isinstance(body, torch.nn.Module) or body is model:
        return None
    return body, head
