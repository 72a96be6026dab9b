"""Evidence for a language model's diff: which tokens an edit reads and writes.

Informational only, never a verdict: the harness turns these candidates into trigger probes.

Two readouts, both over the candidate's own token embedding:

* **Directions.** For each matrix the spectral screen found low-rank (its exact spectrum was
  refined: :meth:`~weightgate.analysis.spectral.DeltaSketch.refine_directions`), at most
  ``MAX_SUSPECTS`` by relative change, and the ``EXTRA_MATRICES`` most changed other
  profiled matrices (read once more, to refine the sketch the census took), the top
  singular directions of ΔW = Σ sᵢ·uᵢ·vᵢᵀ (``DIRECTIONS`` of them, no more than the
  change's rank when it has one) are compared with every token's embedding row.
  Which side lives in the model's hidden (residual) space is decided by shape: matrices
  are stored (out, in), as PyTorch's ``Linear`` and GGUF (shapes reversed) store them;
  u (length = rows) is in hidden space when rows equal the embedding width, v (length =
  cols) when cols do. A hidden u is what the edit *writes* into the residual stream:
  its nearest tokens through the unembedding (``lm_head``/``output.weight``, or the token
  embedding when tied) are candidate **targets** (the down/o projections). A hidden v is
  what the edit *reads*: its nearest tokens through the token embedding are candidate
  **triggers** (q/k/v/up/gate). A square matrix (attention q and o when heads x head size
  equals the width) matches on both sides and lists both, though only one side is the
  residual stream: the tensor's role says which. GPT-2's ``Conv1D`` stores (in, out), so
  its sides come out swapped. The embedding and unembedding themselves are not read out
  this way: their changed rows are listed instead (other lookup tables, position and
  token-type embeddings, are left out).
  "Nearest" is the cosine of the vector with a token's row (so large-norm rows do not
  win by norm alone), top ``TOKENS`` per sign: a direction's sign is arbitrary (-u, -v
  is the same change), so both signs are listed, oriented so that the strongest match
  of the direction is positive. Signs pair up across sides: an input along +v writes
  +s·u, so *positive* triggers go with *positive* targets, negative with negative.
* **Changed embedding rows.** Rows of the token embedding (and of a separate unembedding)
  whose Δ is not zero, counted, and the top :data:`.census.CHANGED_ROWS` by ‖Δrow‖ listed
  as token ids: a remapped or implanted trigger token changes its own row. Taken from the
  census pass, no further read (non-finite changes count as zero there; the bit-flip
  detector has them).

Token strings (:mod:`.vocabulary`) come from the candidate's ``tokenizer.json`` (the
``tokenizers`` package's ``id_to_token``: the vocabulary entry as stored, so byte-level BPE
shows a leading space as ``Ġ`` and SentencePiece as ``▁``), else from the GGUF metadata
``tokenizer.ggml.tokens`` of the file holding the embedding. Without either (or if it cannot
be read: ``note`` says why) token ids only. Reading the embedding is streamed, a block of
rows at a time.

JSON (``report_to_dict(report)["evidence"]``, :func:`.report.evidence_to_dict`; ``null``
when the model has no token embedding)::

    embedding      name of the token embedding (trigger readout, changed rows)
    unembedding    name of the output embedding (target readout); equal to
                   ``embedding`` when tied
    hiddenSize     the embedding width that decides which side is hidden
    tokenizer      where token strings came from: "tokenizer.json",
                   "gguf:tokenizer.ggml.tokens", or null (ids only; or no token
                   listed, when the tokenizer is not read at all)
    note           why something is missing (no tokenizer, unreadable tokenizer), or null
    directions     [{tensor, direction (1 = largest), sigma, suspect (the spectral
                   screen found the change low-rank; false for the extra most-changed
                   matrices), targets, triggers}], targets and triggers each null (that
                   side is not hidden) or {positive: [token], negative: [token]}, a
                   token being {id, token (string or null), cosine}
    embeddingRows  [{tensor, rows, changedRows, top: [{id, token, deltaNorm}]}]

SARIF puts the same for one tensor (:func:`.report.tensor_evidence_dict`) in the
``evidence`` property of each result about that tensor.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from weightgate.analysis.census import TensorChange, delta_blocks
from weightgate.analysis.spectral import DeltaSketch, SingularDirections, SpectralProfile
from weightgate.analysis.tensor_info import CHUNK_ELEMENTS
from weightgate.analysis.tensors import ModelTensors
from weightgate.analysis.vocabulary import vocabulary

DIRECTIONS = 3
"""Singular directions read out per matrix."""
TOKENS = 8
"""Tokens listed per direction, side and sign."""
MAX_SUSPECTS = 6
"""Low-rank suspects read out (an edit's reach: see ``detectors.MAX_EDITED_TENSORS``)."""
EXTRA_MATRICES = 2
"""Most-changed other matrices read out too (one more read each), for dense changes."""
INPUT_EMBEDDINGS = (
    "token_embd.weight",  # GGUF
    "embed_tokens.weight",  # Llama, Mistral, Qwen... (model.embed_tokens)
    "word_embeddings.weight",  # BERT (embeddings.word_embeddings)
    "wte.weight",  # GPT-2
    "tok_embeddings.weight",  # Meta's original Llama
    "embed_in.weight",  # GPT-NeoX
)
"""Token embedding names (the tensor's name, or its last dotted parts)."""
OUTPUT_EMBEDDINGS = ("output.weight", "lm_head.weight", "embed_out.weight")
"""Separate unembedding names; without one the embedding is tied."""

Vector = npt.NDArray[np.float64]
_Kept = TypeVar("_Kept", SingularDirections, DeltaSketch)
Ranked = list[tuple[int, float]]
"""(token id, score) pairs, best first."""


@dataclass(frozen=True)
class TokenScore:
    """A token and how strongly it matched: a cosine, or a changed row's ‖Δrow‖."""

    id: int
    score: float
    token: str | None = None


@dataclass(frozen=True)
class Readout:
    """The nearest tokens to one side of a direction, for +vector and for -vector."""

    positive: tuple[TokenScore, ...]
    negative: tuple[TokenScore, ...]


@dataclass(frozen=True)
class DirectionEvidence:
    """One singular direction of one matrix's change and its nearest tokens."""

    tensor: str
    index: int
    """1 for the largest singular value."""
    sigma: float
    suspect: bool
    """The spectral screen found the change low-rank (else: one of the most changed)."""
    targets: Readout | None
    """What the change writes (its hidden-space u), or None when u is not hidden."""
    triggers: Readout | None
    """What the change reads (its hidden-space v), or None when v is not hidden."""


@dataclass(frozen=True)
class RowChanges:
    """The changed rows of an embedding matrix."""

    tensor: str
    rows: int
    changed_rows: int
    top: tuple[TokenScore, ...]
    """The most changed rows (token ids), largest ‖Δrow‖ first."""


@dataclass(frozen=True)
class Evidence:
    """The token readout of a diff; see the module docstring."""

    embedding: str
    unembedding: str
    width: int
    tokenizer: str | None
    note: str | None
    directions: tuple[DirectionEvidence, ...]
    rows: tuple[RowChanges, ...]


def embedding_names(model: ModelTensors) -> tuple[str, str] | None:
    """(token embedding, unembedding) of a language model, or None if it has none.

    The unembedding is a separate output matrix of the same width if there is one, else
    the token embedding itself (tied).
    """
    embedding = _named(model, INPUT_EMBEDDINGS)
    if embedding is None:
        return None
    width = model.tensors[embedding].shape[1]
    output = _named(model, OUTPUT_EMBEDDINGS)
    if output is None or model.tensors[output].shape[1] != width:
        output = embedding
    return embedding, output


def _named(model: ModelTensors, names: tuple[str, ...]) -> str | None:
    for wanted in names:
        for name, info in model.tensors.items():
            matrix = len(info.shape) == 2 and min(info.shape) > 0
            if matrix and (name == wanted or name.endswith("." + wanted)):
                return name
    return None


class SuspectDirections:
    """What the evidence will read out, kept as the diff's workers hand it over.

    The singular directions of the ``MAX_SUSPECTS`` refined suspects, and the range sketches
    (taken in the census pass) of the ``EXTRA_MATRICES`` other profiled matrices, each pool
    by largest relative change among the readable ones; so memory stays bounded however many
    matrices a merged LoRA made low-rank, and an extra matrix needs one more read, not two.
    """

    def __init__(self, candidate: ModelTensors) -> None:
        self.names = embedding_names(candidate)
        self.candidate = candidate
        self.kept: dict[str, tuple[tuple[float, str], SingularDirections]] = {}
        self.sketches: dict[str, tuple[tuple[float, str], DeltaSketch]] = {}
        self._lock = threading.Lock()  # the diff's workers add as they finish

    def add(self, change: TensorChange, found: SingularDirections | DeltaSketch) -> None:
        """Keep a refined suspect's directions, or another matrix's sketch, if among the top."""
        if self.names is None or not _readable(self.candidate, self.names, change.name):
            return
        with self._lock:
            if isinstance(found, DeltaSketch):
                _keep_top(self.sketches, change, found, EXTRA_MATRICES)
            else:
                _keep_top(self.kept, change, found, MAX_SUSPECTS)


def _keep_top(
    pool: dict[str, tuple[tuple[float, str], _Kept]], change: TensorChange, item: _Kept, size: int
) -> None:
    pool[change.name] = (_rank_key(change), item)
    if len(pool) > size:
        del pool[min(pool, key=lambda name: pool[name][0])]


def _rank_key(change: TensorChange) -> tuple[float, str]:
    """Largest relative change first; the name breaks ties the same way everywhere."""
    return change.relative_change, change.name


def _readable(candidate: ModelTensors, names: tuple[str, str], tensor: str) -> bool:
    """Whether a tensor's directions can be read out (the rule above)."""
    width = candidate.tensors[names[0]].shape[1]
    shape = candidate.tensors[tensor].shape
    lookup = "embed" in tensor or tensor == "wpe.weight" or tensor.endswith(".wpe.weight")
    return tensor not in names and len(shape) == 2 and width in shape and not lookup


def read_evidence(
    baseline: ModelTensors,
    candidate: ModelTensors,
    changes: list[TensorChange],
    spectra: dict[str, SpectralProfile],
    suspects: SuspectDirections,
) -> Evidence | None:
    """The evidence of a diff (None for a model without a token embedding).

    Args:
        baseline: The baseline model, open.
        candidate: The candidate model, open.
        changes: The census of every common tensor.
        spectra: The spectral profile of every profiled changed matrix.
        suspects: The directions kept of the matrices whose spectrum was refined, and the
            sketches of the most changed others.
    """
    names = embedding_names(candidate)
    if names is None:
        return None
    embedding, unembedding = names
    width = candidate.tensors[embedding].shape[1]
    changed = sorted(
        (change for change in changes if not change.identical), key=_rank_key, reverse=True
    )
    readable = [
        change.name
        for change in changed
        if change.name in spectra and _readable(candidate, names, change.name)
    ]
    refined = [name for name in readable if spectra[name].refined][:MAX_SUSPECTS]
    extras = [name for name in readable if not spectra[name].refined][:EXTRA_MATRICES]
    found = {name: suspects.kept[name][1] for name in refined}
    norms = {change.name: change.delta_norm for change in changed}
    for name in extras:  # the same sketch the census pass took: one more read to refine it
        blocks = delta_blocks(baseline, candidate, name)
        sketch = suspects.sketches[name][1]
        found[name] = sketch.refine_directions(name, blocks, norms[name], DIRECTIONS)[1]
    raw = _read_directions(
        candidate,
        embedding=embedding,
        unembedding=unembedding,
        width=width,
        found=found,
        spectra=spectra,
    )
    censused = {change.name: change for change in changed}
    rows = [
        (name, candidate.tensors[name].shape[0], censused[name].changed_rows,
         list(censused[name].largest_rows))
        for name in dict.fromkeys(names)
        if name in censused
    ]  # fmt: skip
    ids = {token for direction in raw for token in direction.ids()}
    ids.update(token for _, _, _, top in rows for token, _ in top)
    tokens, source, note = vocabulary(candidate, embedding, ids) if ids else ({}, None, None)
    return Evidence(
        embedding,
        unembedding,
        width,
        source,
        note,
        tuple(direction.evidence(tokens, suspect=direction.tensor in refined) for direction in raw),
        tuple(
            RowChanges(name, total, count, tuple(_scored(top, tokens)))
            for name, total, count, top in rows
        ),
    )


@dataclass
class _RawDirection:
    """One direction's readout before token strings: per side (ids, cosines) per sign."""

    tensor: str
    index: int
    sigma: float
    sides: dict[str, tuple[Ranked, Ranked]]

    def ids(self) -> Iterable[int]:
        for positive, negative in self.sides.values():
            yield from (token for token, _ in (*positive, *negative))

    def evidence(self, tokens: dict[int, str], *, suspect: bool) -> DirectionEvidence:
        def side(key: str) -> Readout | None:
            if key not in self.sides:
                return None
            positive, negative = self.sides[key]
            return Readout(tuple(_scored(positive, tokens)), tuple(_scored(negative, tokens)))

        return DirectionEvidence(
            self.tensor, self.index, self.sigma, suspect, side("targets"), side("triggers")
        )


def _scored(pairs: Iterable[tuple[int, float]], tokens: dict[int, str]) -> Iterable[TokenScore]:
    return (TokenScore(token, score, tokens.get(token)) for token, score in pairs)


def _read_directions(
    candidate: ModelTensors,
    *,
    embedding: str,
    unembedding: str,
    width: int,
    found: dict[str, SingularDirections],
    spectra: dict[str, SpectralProfile],
) -> list[_RawDirection]:
    """Every direction's nearest tokens: one streamed pass per embedding matrix."""
    wanted: dict[str, list[tuple[tuple[str, int, str], Vector]]] = {}
    for name, directions in found.items():
        rank = spectra[name].rank
        count = min(DIRECTIONS, rank or DIRECTIONS, directions.sigma.size)
        rows, cols = directions.left.shape[0], directions.right.shape[1]
        for index in range(count):
            if rows == width:
                key = (name, index, "targets")
                wanted.setdefault(unembedding, []).append((key, directions.left[:, index]))
            if cols == width:
                key = (name, index, "triggers")
                wanted.setdefault(embedding, []).append((key, directions.right[index]))
    matches: dict[tuple[str, int, str], tuple[Ranked, Ranked]]
    matches = {}
    for matrix, entries in wanted.items():
        vectors = np.stack([vector for _, vector in entries], axis=1)
        for (key, _), result in zip(
            entries, nearest_tokens(candidate, matrix, vectors), strict=True
        ):
            matches[key] = result
    raw = []
    for name, directions in found.items():
        for index in range(directions.sigma.size):
            sides = {
                side: matches[(name, index, side)]
                for side in ("targets", "triggers")
                if (name, index, side) in matches
            }
            if sides:
                raw.append(
                    _RawDirection(name, index + 1, float(directions.sigma[index]), _oriented(sides))
                )
    return raw


def _oriented(
    sides: dict[str, tuple[Ranked, Ranked]],
) -> dict[str, tuple[Ranked, Ranked]]:
    """Flip the direction (every side at once) so that its strongest match is positive."""
    best = max(
        (abs(score), sign)
        for positive, negative in sides.values()
        for sign, matches in ((1, positive), (-1, negative))
        for _, score in matches[:1]
    )
    if best[1] > 0:
        return sides
    return {side: (negative, positive) for side, (positive, negative) in sides.items()}


def nearest_tokens(
    model: ModelTensors, matrix: str, vectors: Vector
) -> list[tuple[Ranked, Ranked]]:
    """Per column of ``vectors`` (width x n): the rows of ``matrix`` nearest to it and to -it.

    Each as ``TOKENS`` (row, cosine) pairs, best first.

    ``matrix`` is read a block of rows at a time; memory is one block plus the n running
    top lists.
    """
    width = vectors.shape[0]
    norms = np.linalg.norm(vectors, axis=0)
    # float32 throughout: the ranking needs no more, and the pass is over the whole vocabulary.
    unit = (vectors / np.where(norms > 0, norms, 1.0)).astype(np.float32)
    best = [_Best(vectors.shape[1]), _Best(vectors.shape[1])]
    first = 0
    for chunk in model.values(matrix, max(1, CHUNK_ELEMENTS // width) * width):
        block = chunk.reshape(-1, width).astype(np.float32, copy=False)
        lengths = np.sqrt(np.einsum("ij,ij->i", block, block))
        cosines = (block @ unit) / np.where(lengths > 0, lengths, np.inf)[:, None]
        cosines[~np.isfinite(cosines)] = 0.0
        best[0].add(cosines, first)
        best[1].add(-cosines, first)
        first += block.shape[0]
    positive, negative = best[0].result(), best[1].result()
    return list(zip(positive, negative, strict=True))


class _Best:
    """The ``TOKENS`` highest scores per column, and their rows, over blocks of rows."""

    def __init__(self, columns: int) -> None:
        self.scores = np.empty((0, columns))
        self.rows = np.empty((0, columns), dtype=np.int64)

    def add(self, scores: Vector, first: int) -> None:
        rows = np.broadcast_to(np.arange(first, first + scores.shape[0])[:, None], scores.shape)
        self.scores = np.concatenate([self.scores, scores])
        self.rows = np.concatenate([self.rows, rows])
        if self.scores.shape[0] > TOKENS:
            keep = np.argpartition(-self.scores, TOKENS - 1, axis=0)[:TOKENS]
            self.scores = np.take_along_axis(self.scores, keep, axis=0)
            self.rows = np.take_along_axis(self.rows, keep, axis=0)

    def result(self) -> list[Ranked]:
        order = np.argsort(-self.scores, axis=0, kind="stable")
        scores = np.take_along_axis(self.scores, order, axis=0)
        rows = np.take_along_axis(self.rows, order, axis=0)
        return [
            [
                (int(row), float(score))
                for row, score in zip(rows[:, column], scores[:, column], strict=True)
            ]
            for column in range(scores.shape[1])
        ]
