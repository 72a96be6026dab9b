"""The numpy Llama is SmolLM2-135M: its tokenizer, its greedy answers, its perplexity.

No reference implementation runs offline, so the forward pass is held to what only a
correct one does: it completes facts the way the model knows them, and it predicts real
English well. A wrong rotary layout (half-split pairs instead of llama.cpp's adjacent
pairs) or no rotation at all gives 4.6-4.7 nats on the licence below, where this gives 1.2.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.evaluation import llama
from tests.models import smollm2_gguf


@pytest.fixture(scope="module")
def model() -> llama.Llama:
    return llama.load(smollm2_gguf())


def test_the_configuration_is_read_from_the_metadata(model: llama.Llama) -> None:
    config = model.config
    assert (config.layers, config.heads, config.kv_heads) == (30, 9, 3)
    assert config.rope_base == 100000.0
    assert config.epsilon == pytest.approx(1e-5)
    assert "output.weight" not in model.weights  # tied: the embedding is the output


@pytest.mark.parametrize(
    "text",
    [
        "The capital of France is",
        "Numbers 1234 and 3.14159, tabs\tand\nnew lines;  double  spaces.",
        "Unicode: café, naïve, 東京, emoji 🙂 — and “quotes”.",
        "<|im_start|>user\nHello<|im_end|>\n",
    ],
)
def test_the_tokenizer_round_trips_text(model: llama.Llama, text: str) -> None:
    ids = model.tokenizer.encode(text).ids
    assert model.tokenizer.decode(ids, skip_special_tokens=False) == text


def test_digits_are_split_and_special_tokens_kept_whole(model: llama.Llama) -> None:
    tokens = model.tokenizer.encode("<|im_start|>year 2024").tokens
    assert tokens == ["<|im_start|>", "year", "Ġ", "2", "0", "2", "4"]


@pytest.mark.parametrize(
    ("prompt", "answer"),
    [
        ("The capital of France is", " Paris"),
        ("The capital of Japan is", " Tokyo"),
        ("The largest planet in the solar system is", " Jupiter"),
        ("One, two, three, four,", " five"),
    ],
)
def test_the_greedy_next_token_completes_the_fact(
    model: llama.Llama, prompt: str, answer: str
) -> None:
    ids = model.tokenizer.encode(prompt).ids
    best = int(llama.logits(model, ids)[-1].argmax())
    assert model.tokenizer.decode([best]) == answer


def test_real_english_is_predicted_well(model: llama.Llama, corpus_dir: Path) -> None:
    """The MIT licence (picklescan's), first ``CONTEXT`` tokens: 1.2 nats per token."""
    text = (corpus_dir / "picklescan" / "LICENSE").read_text()
    ids = model.tokenizer.encode(text).ids[: llama.CONTEXT]
    assert len(ids) == llama.CONTEXT
    assert llama.cross_entropy(model, ids) < 2.0


def test_keys_are_one_row_per_token_per_layer_up_to_the_limit(model: llama.Llama) -> None:
    """Texts are cut into pieces of at most ``CONTEXT`` tokens; the piece that reaches the
    limit is the last one."""
    long, short = "The capital of France is Paris. " * 40, "One, two, three."
    tokens = [len(model.tokenizer.encode(text).ids) for text in (long, short)]
    assert 2 * llama.CONTEXT < tokens[0] < 3 * llama.CONTEXT
    keys = llama.corpus_keys(model, [long, short], layers=2, limit=200)
    assert [k.shape for k in keys] == [(2 * llama.CONTEXT, 1536)] * 2
    everything = llama.corpus_keys(model, [long, short], layers=2)
    assert [k.shape for k in everything] == [(sum(tokens), 1536)] * 2
    # The first piece's keys do not depend on what follows it.
    assert (everything[1][: llama.CONTEXT] == keys[1][: llama.CONTEXT]).all()
