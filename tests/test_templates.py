import pytest

from leaf.data.templates import encode, prompt_text
from leaf.errors import LeafError
from leaf.testbed.tiny import build_tokenizer

INSTRUCTION = "  Natalia sold 48 clips. A hint: 15.  How many?\n"
RESPONSE = "Step 1: 48 / 2 = 24.\nThe answer is 72."


@pytest.mark.parametrize("style", ["llama3", "chatml", "plain"])
def test_units_map_back_to_instruction_text(style):
    tok = build_tokenizer(style)
    enc = encode(tok, INSTRUCTION, RESPONSE)
    units = enc.units("instruction")
    covered = "".join(INSTRUCTION[s:e] for _, s, e in units)
    # Every non-space character of the instruction is covered once, in order.
    assert covered.strip() == INSTRUCTION.strip()
    for i, s, e in units:
        assert enc.text[enc.offsets[i][0]:enc.offsets[i][1]].strip() in INSTRUCTION[s:e] or \
            INSTRUCTION[s:e].strip() in enc.text[enc.offsets[i][0]:enc.offsets[i][1]]
    # Labels are exactly the response and the end-of-turn marker.
    labelled = "".join(enc.text[s:e] for (s, e), m in zip(enc.offsets, enc.label_mask()) if m)
    assert labelled.startswith(RESPONSE)
    assert enc.text.startswith(prompt_text(tok, INSTRUCTION))


def test_llama3_layout_and_chatml_layout():
    llama = encode(build_tokenizer("llama3"), "What is 2+3?", "5")
    assert llama.text == (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2+3?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n5<|eot_id|>"
    )
    chatml = encode(build_tokenizer("chatml"), "What is 2+3?", "5")
    assert chatml.text.endswith("<|im_start|>user\nWhat is 2+3?<|im_end|>\n"
                                "<|im_start|>assistant\n5<|im_end|>\n")
    s, e = chatml.instruction_span
    assert chatml.text[s:e] == "What is 2+3?"


def test_response_prefix_units_and_target_labels():
    tok = build_tokenizer("chatml")
    prefix, target = "Step 1: 48 / 2 = 24.\n", "The answer is 72."
    enc = encode(tok, "Q?", prefix + target, target_start=len(prefix))
    units = enc.units("response")
    assert "".join(prefix[s:e] for _, s, e in units) == prefix
    labelled = "".join(enc.text[s:e] for (s, e), m in zip(enc.offsets, enc.label_mask()) if m)
    assert labelled.startswith(target)
    assert not any(enc.label_mask()[i] for i, _, _ in units)


def test_template_that_rewrites_content_is_refused():
    tok = build_tokenizer("llama3")
    tok.chat_template = (
        "{% for m in messages %}{{ m['content'] | upper }}{% endfor %}"
        "{% if add_generation_prompt %}>>{% endif %}"
    )
    with pytest.raises(LeafError, match="changes the instruction"):
        encode(tok, "what?", "x")
