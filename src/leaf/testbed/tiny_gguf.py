"""Write a tiny Llama-architecture model and its tokenizer as one GGUF file (F32, unquantised).

Tests use it to exercise GGUF input without downloading anything: the file carries the
metadata llama.cpp's converter writes for a Llama model with a byte-level BPE vocabulary
(``tokenizer.ggml.model = "gpt2"``), the merges, the special-token ids and the chat template,
so transformers rebuilds the same config, tokenizer and weights from it. Needs the ``gguf``
package.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

_LAYER_TENSORS = {  # Hugging Face name inside a decoder layer -> GGUF name inside a block
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}


def _rope_permute(weight: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's row order for q/k: each head's two rotary halves interleaved."""
    half = weight.shape[0] // heads // 2
    return (weight.reshape(heads, 2, half, *weight.shape[1:])
            .swapaxes(1, 2).reshape(weight.shape))


def write_llama_gguf(model, tokenizer, path: str | Path, name: str = "tiny-llama") -> Path:
    """Write ``model`` (a ``LlamaForCausalLM``) and its fast byte-level BPE ``tokenizer`` to
    ``path`` (a ``.gguf`` file); return the path."""
    import gguf  # optional: gguf

    cfg = model.config
    if cfg.model_type != "llama":
        raise ValueError(f"only Llama-architecture models are written, got {cfg.model_type}")
    path = Path(path)
    writer = gguf.GGUFWriter(str(path), "llama")
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    rope = getattr(cfg, "rope_parameters", None) or {}
    writer.add_name(name)
    writer.add_context_length(cfg.max_position_embeddings)
    writer.add_embedding_length(cfg.hidden_size)
    writer.add_block_count(cfg.num_hidden_layers)
    writer.add_feed_forward_length(cfg.intermediate_size)
    writer.add_head_count(cfg.num_attention_heads)
    writer.add_head_count_kv(cfg.num_key_value_heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(rope.get("rope_theta", 10000.0)))
    writer.add_layer_norm_rms_eps(float(cfg.rms_norm_eps))
    writer.add_vocab_size(cfg.vocab_size)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)

    vocab = tokenizer.get_vocab()
    tokens = [""] * len(vocab)
    for token, i in vocab.items():
        tokens[i] = token
    special = set(tokenizer.all_special_ids) | {
        i for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    merges = json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL
                            for i in range(len(tokens))])
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    for add, token_id in ((writer.add_bos_token_id, tokenizer.bos_token_id),
                          (writer.add_eos_token_id, tokenizer.eos_token_id),
                          (writer.add_pad_token_id, tokenizer.pad_token_id)):
        if token_id is not None:
            add(token_id)
    writer.add_add_bos_token(False)
    if tokenizer.chat_template:
        writer.add_chat_template(tokenizer.chat_template)

    state = {k: v.detach().float().cpu().numpy() for k, v in model.state_dict().items()}
    writer.add_tensor("token_embd.weight", state["model.embed_tokens.weight"])
    for i in range(cfg.num_hidden_layers):
        for hf, gg in _LAYER_TENSORS.items():
            w = state[f"model.layers.{i}.{hf}"]
            if gg == "attn_q.weight":
                w = _rope_permute(w, cfg.num_attention_heads)
            elif gg == "attn_k.weight":
                w = _rope_permute(w, cfg.num_key_value_heads)
            writer.add_tensor(f"blk.{i}.{gg}", np.ascontiguousarray(w))
    writer.add_tensor("output_norm.weight", state["model.norm.weight"])
    if not cfg.tie_word_embeddings:
        writer.add_tensor("output.weight", state["lm_head.weight"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
