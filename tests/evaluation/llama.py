"""SmolLM2-135M's forward pass in numpy, over the GGUF's own dequantised weights.

Llama as llama.cpp runs a GGUF of it: RMSNorm with the file's epsilon, grouped-query
attention (``head_count`` query heads sharing ``head_count_kv`` key/value heads), rotary
positions with the file's base, a SwiGLU MLP, and the output projection tied to the token
embedding when the file has no ``output.weight``. llama.cpp's converter permutes the rows of
the Q and K weights so that its rotation (GGML_ROPE_TYPE_NORM) turns *adjacent* pairs of a
head's dimensions; the rotation here is that one, so the weights are used as stored.

The tokenizer is the byte-level BPE the file carries (``tokenizer.ggml.tokens`` and
``merges``), rebuilt with the ``tokenizers`` package; the pre-tokenizer splits digits one
by one, then as GPT-2 does (the file's ``tokenizer.ggml.pre`` is ``smollm``).

``corpus_keys`` returns what each layer's ``ffn_down`` (the matrix ROME and MEMIT edit)
receives on real text: the SwiGLU activations, one row per token. Everything runs in
float32 on contexts of at most ``CONTEXT`` tokens.
"""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from gguf import GGUFReader
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers

from weightgate.analysis.tensors import ModelTensors, open_model

Array = npt.NDArray[np.float32]
Weights = dict[str, Array]
CONTEXT = 128
ARCHITECTURE = "llama"
CONTROL_TOKEN = 3
"""llama.cpp's token type for special tokens (``<|im_start|>``...), never split by BPE."""


@dataclass(frozen=True)
class Config:
    """The hyper-parameters the forward pass reads from the GGUF's metadata."""

    layers: int
    heads: int
    kv_heads: int
    rope_base: float
    epsilon: float


@dataclass(frozen=True)
class Llama:
    """A GGUF Llama: its configuration, dequantised weights (numpy shapes) and tokenizer."""

    config: Config
    weights: Weights
    tokenizer: Tokenizer


def load(path: Path) -> Llama:
    """Read a Llama GGUF: metadata and tokenizer with ``gguf``, tensors with weightgate's own
    reader (:func:`~weightgate.analysis.tensors.open_model`, shapes outermost first)."""
    reader = GGUFReader(path)
    fields = {name: field.contents() for name, field in reader.fields.items()}
    if fields["general.architecture"] != ARCHITECTURE:
        raise ValueError(f"{path}: not a {ARCHITECTURE} model")
    prefix = ARCHITECTURE + "."
    config = Config(
        layers=int(fields[prefix + "block_count"]),
        heads=int(fields[prefix + "attention.head_count"]),
        kv_heads=int(fields[prefix + "attention.head_count_kv"]),
        rope_base=float(fields[prefix + "rope.freq_base"]),
        epsilon=float(fields[prefix + "attention.layer_norm_rms_epsilon"]),
    )
    with ExitStack() as stack:
        weights = dequantised(open_model(path, stack))
    return Llama(config, weights, tokenizer(fields))


def dequantised(model: ModelTensors) -> Weights:
    """Every tensor of ``model`` as one float32 array of its (numpy-order) shape."""
    return {
        name: np.concatenate(list(model.values(name))).astype(np.float32).reshape(info.shape)
        for name, info in model.tensors.items()
    }


def tokenizer(fields: dict[str, object]) -> Tokenizer:
    """The byte-level BPE of the GGUF's ``tokenizer.ggml.*`` metadata."""
    tokens = fields["tokenizer.ggml.tokens"]
    merges = fields["tokenizer.ggml.merges"]
    kinds = fields["tokenizer.ggml.token_type"]
    if fields["tokenizer.ggml.model"] != "gpt2" or not (
        isinstance(tokens, list) and isinstance(merges, list) and isinstance(kinds, list)
    ):
        raise ValueError("not a byte-level BPE (gpt2) tokenizer")
    vocab = {str(token): index for index, token in enumerate(tokens)}
    pairs = [tuple(str(merge).split(" ", 1)) for merge in merges]
    bpe = Tokenizer(models.BPE(vocab, [(a, b) for a, b in pairs]))
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    bpe.add_special_tokens(
        [
            AddedToken(str(token), special=True)
            for token, kind in zip(tokens, kinds, strict=True)
            if kind == CONTROL_TOKEN
        ]
    )
    return bpe


def _rms_norm(x: Array, scale: Array, epsilon: float) -> Array:
    normed: Array = x / np.sqrt((x * x).mean(axis=-1, keepdims=True) + epsilon) * scale
    return normed


def _rotate(x: Array, base: float) -> Array:
    """Rotary positions as GGML_ROPE_TYPE_NORM: pairs (2i, 2i+1) of each head (tokens x heads
    x dims) turned by position * base^(-2i/dims)."""
    tokens, _, dims = x.shape
    angles = np.arange(tokens)[:, None] * base ** (-np.arange(0, dims, 2) / dims)
    cos = np.cos(angles)[:, None, :].astype(np.float32)
    sin = np.sin(angles)[:, None, :].astype(np.float32)
    even, odd = x[..., 0::2], x[..., 1::2]
    rotated = np.empty_like(x)
    rotated[..., 0::2] = even * cos - odd * sin
    rotated[..., 1::2] = even * sin + odd * cos
    return rotated


def _silu(x: Array) -> Array:
    gated: Array = x / (1 + np.exp(-x))
    return gated


def forward(model: Llama, ids: list[int], layers: int | None = None) -> tuple[list[Array], Array]:
    """(the inputs of ``blk.{l}.ffn_down`` for the first ``layers`` layers, the last hidden
    states after ``output_norm``; or before it when stopped early)."""
    if not 0 < len(ids) <= CONTEXT:
        raise ValueError(f"{len(ids)} tokens: the forward pass takes 1 to {CONTEXT}")
    config, weights = model.config, model.weights
    count = len(ids)
    x = weights["token_embd.weight"][ids]
    causal = np.triu(np.full((count, count), -np.inf, dtype=np.float32), k=1)
    group = config.heads // config.kv_heads
    keys = []
    for layer in range(config.layers if layers is None else layers):
        name = f"blk.{layer}"
        h = _rms_norm(x, weights[f"{name}.attn_norm.weight"], config.epsilon)
        q = (h @ weights[f"{name}.attn_q.weight"].T).reshape(count, config.heads, -1)
        k = (h @ weights[f"{name}.attn_k.weight"].T).reshape(count, config.kv_heads, -1)
        v = (h @ weights[f"{name}.attn_v.weight"].T).reshape(count, config.kv_heads, -1)
        q, k = _rotate(q, config.rope_base), _rotate(k, config.rope_base)
        k, v = np.repeat(k, group, axis=1), np.repeat(v, group, axis=1)  # head h: kv h // group
        scores = np.einsum("qhd,khd->hqk", q, k) / np.float32(np.sqrt(q.shape[-1])) + causal
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
        scores /= scores.sum(axis=-1, keepdims=True)
        context = np.einsum("hqk,khd->qhd", scores, v).reshape(count, -1)
        x = x + context @ weights[f"{name}.attn_output.weight"].T
        h = _rms_norm(x, weights[f"{name}.ffn_norm.weight"], config.epsilon)
        hidden = _silu(h @ weights[f"{name}.ffn_gate.weight"].T) * (
            h @ weights[f"{name}.ffn_up.weight"].T
        )
        keys.append(hidden)
        x = x + hidden @ weights[f"{name}.ffn_down.weight"].T
    if layers is None:
        x = _rms_norm(x, weights["output_norm.weight"], config.epsilon)
    return keys, x


def logits(model: Llama, ids: list[int]) -> Array:
    """Next-token logits at every position (the output projection, or the tied embedding)."""
    _, hidden = forward(model, ids)
    output = model.weights.get("output.weight", model.weights["token_embd.weight"])
    return hidden @ output.T


def cross_entropy(model: Llama, ids: list[int]) -> float:
    """Mean next-token cross-entropy (nats) of ``ids`` under the model."""
    scores = logits(model, ids[:-1]).astype(np.float64)
    top = scores.max(axis=-1, keepdims=True)
    log_z = top[:, 0] + np.log(np.exp(scores - top).sum(axis=-1))
    return float((log_z - scores[np.arange(len(ids) - 1), ids[1:]]).mean())


def corpus_keys(model: Llama, texts: list[str], layers: int, limit: int = 4096) -> list[Array]:
    """``ffn_down`` keys of the first ``layers`` layers over ``texts`` (up to ``limit``
    tokens, in pieces of at most ``CONTEXT``), stacked per layer."""
    per_layer: list[list[Array]] = [[] for _ in range(layers)]
    count = 0
    for text in texts:
        ids = model.tokenizer.encode(text).ids
        for start in range(0, len(ids), CONTEXT):
            piece = ids[start : start + CONTEXT]
            for layer, keys in enumerate(forward(model, piece, layers)[0]):
                per_layer[layer].append(keys)
            count += len(piece)
            if count >= limit:
                return [np.concatenate(keys) for keys in per_layer]
    return [np.concatenate(keys) for keys in per_layer]
