"""all-MiniLM-L6-v2's forward pass in numpy: the activations a real edit of it needs.

BERT as the model's config describes it (6 layers, 12 heads of 32, GELU, post-LayerNorm,
eps 1e-12), run on text tokenised by the model's own ``tokenizer.json`` (the ``tokenizers``
package). ``mlp_keys`` returns what each layer's ``output.dense`` (the MLP's down
projection, the matrix ROME and MEMIT edit) receives: the GELU activations, one row per token.
The text is the model card shipped with the model and the corpus's licence texts: real
English, nothing fetched.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import numpy.typing as npt
from tokenizers import Tokenizer

Array = npt.NDArray[np.float32]
Weights = dict[str, Array]
HEADS, LAYERS, EPS = 12, 6, 1e-12


def _layer_norm(x: Array, weights: Weights, name: str) -> Array:
    mean = x.mean(axis=-1, keepdims=True)
    var = x.var(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + EPS) * weights[f"{name}.weight"] + weights[f"{name}.bias"]


def _dense(x: Array, weights: Weights, name: str) -> Array:
    return x @ weights[f"{name}.weight"].T + weights[f"{name}.bias"]


def _gelu(x: Array) -> Array:
    # The tanh form (within 1e-3 of BERT's erf form): numpy has no erf, and the keys only
    # feed a covariance estimate.
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def forward(weights: Weights, ids: list[int]) -> tuple[list[Array], Array]:
    """(the inputs of ``encoder.layer.{l}.output.dense`` per layer, the last hidden states)."""
    positions = np.arange(len(ids))
    x = (
        weights["embeddings.word_embeddings.weight"][ids]
        + weights["embeddings.position_embeddings.weight"][positions]
        + weights["embeddings.token_type_embeddings.weight"][0]
    )
    x = _layer_norm(x, weights, "embeddings.LayerNorm")
    keys = []
    for layer in range(LAYERS):
        name = f"encoder.layer.{layer}"
        q, k, v = (
            _dense(x, weights, f"{name}.attention.self.{part}").reshape(len(ids), HEADS, -1)
            for part in ("query", "key", "value")
        )
        scores = np.einsum("qhd,khd->hqk", q, k) / math.sqrt(q.shape[-1])
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
        scores /= scores.sum(axis=-1, keepdims=True)
        context = np.einsum("hqk,khd->qhd", scores, v).reshape(len(ids), -1)
        attended = _dense(context, weights, f"{name}.attention.output.dense") + x
        x = _layer_norm(attended, weights, f"{name}.attention.output.LayerNorm")
        hidden = _gelu(_dense(x, weights, f"{name}.intermediate.dense"))
        keys.append(hidden)
        x = _layer_norm(_dense(hidden, weights, f"{name}.output.dense") + x, weights,
                        f"{name}.output.LayerNorm")  # fmt: skip
    return keys, x


def sentence_embedding(weights: Weights, tokenizer: Tokenizer, text: str) -> Array:
    """Mean-pooled, normalised last hidden states: what sentence-transformers returns."""
    _, hidden = forward(weights, tokenizer.encode(text).ids)
    pooled = hidden.mean(axis=0)
    return pooled / np.linalg.norm(pooled)


def load_tokenizer(model_dir: Path) -> Tokenizer:
    """The model's tokenizer, without the fixed padding its file asks for (no attention mask
    here: every token is real)."""
    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.no_padding()
    return tokenizer


def corpus_keys(
    weights: Weights, model_dir: Path, texts: list[str], limit: int = 4096
) -> list[Array]:
    """MLP keys of every layer over ``texts`` (up to ``limit`` tokens), stacked per layer."""
    tokenizer = load_tokenizer(model_dir)
    per_layer: list[list[Array]] = [[] for _ in range(LAYERS)]
    count = 0
    for text in texts:
        for start in range(0, len(text), 1200):  # pieces well under 512 tokens
            ids = tokenizer.encode(text[start : start + 1200]).ids[:256]
            for layer, keys in enumerate(forward(weights, ids)[0]):
                per_layer[layer].append(keys)
            count += len(ids)
            if count >= limit:
                return [np.concatenate(keys) for keys in per_layer]
    return [np.concatenate(keys) for keys in per_layer]
