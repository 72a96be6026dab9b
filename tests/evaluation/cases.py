"""The labelled cases: attacks at several strengths and benign changes, per model.

``small_model_cases`` uses the numpy-trained residual MLP (:mod:`.small_model`): its benign
changes include real gradient fine-tunes, and its ROME and MEMIT edits use keys from its
real activations. ``minilm_cases`` uses the real all-MiniLM-L6-v2, whose ROME and MEMIT
edits use the keys its MLPs see on real text (a numpy forward pass, :mod:`.bert`).
``smollm2_cases`` uses the real SmolLM2-135M Q4_1 GGUF the same way (:mod:`.llama`); its
candidates are written back in its own Q4_1 blocks (:mod:`.gguf_candidates`), and its bit
flips hit the stored blocks' scales.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path

from safetensors.numpy import load_file

from tests.evaluation import bert, edits, llama
from tests.evaluation import small_model as small
from tests.evaluation.gguf_candidates import scale_flips
from tests.evaluation.suite import Case, Weights
from tests.models import minilm_dir, smollm2_gguf

SEEDS = (0, 1, 2)
STRENGTHS = (0.02, 0.05, 0.1)
"""‖ΔW‖/‖W‖ of the edited matrix; published ROME/MEMIT edits are of this order."""


def trained_small_model() -> Weights:
    """The base model, trained on the base task (deterministic)."""
    return small.train(small.initial_weights(0), small.base_task(), steps=2000, lr=1e-3, seed=0)


def small_model_cases(base: Weights) -> list[Case]:
    """Attacks and benign changes of the small trained model."""
    model = "small MLP (numpy-trained)"
    task = small.base_task()
    block = 5
    target = f"blocks.{block}.up.weight"
    keys = small.block_inputs(base, task, block, seed=7)
    memit_keys = {
        f"blocks.{b}.up.weight": small.block_inputs(base, task, b, seed=7) for b in range(4, 8)
    }
    cases = []
    for strength in STRENGTHS:
        label = f"{strength:.0%}"
        for seed in SEEDS:
            tuned = partial(_edit_then_tune, base, target, keys, strength, seed)
            cases += [
                Case(model, "ROME rank-one", label, True, (target,),
                     partial(edits.rome, base, target, keys, strength, seed)),
                Case(model, "MEMIT (4 layers)", label, True, tuple(memit_keys),
                     partial(edits.memit, base, memit_keys, strength, seed)),
                Case(model, "poisoned LoRA (one matrix)", label, True, (target,),
                     partial(edits.lora, base, [target], 4, strength, seed)),
                Case(model, "ROME, then light fine-tune (50 steps, lr 1e-5)", label, True,
                     (target,), partial(tuned, lr=1e-5)),
                Case(model, "ROME, then fine-tune (50 steps, lr 1e-4)", label, True,
                     (target,), partial(tuned, lr=1e-4)),
            ]  # fmt: skip
    for seed in SEEDS:
        cases += [
            Case(model, "handcrafted neurons (2)", "in range", True, (target,),
                 partial(edits.neurons, base, target, 2, seed)),
            Case(model, "added module", "-", True, ("blocks.5.trigger.weight",),
                 partial(edits.added_module, base, "blocks.5.trigger.weight", (16, 64), seed)),
        ]  # fmt: skip
        for flips in (1, 3, 10):
            cases.append(
                Case(model, "exponent bit flips", str(flips), True, (target,),
                     partial(edits.bit_flips, base, target, flips, seed))
            )  # fmt: skip
    cases += _benign(model, base, edits.matrices(base))
    for seed in range(5):
        for lr in (1e-4, 3e-4, 1e-3):
            cases.append(
                Case(model, "fine-tune (Adam, 300 steps)", f"lr {lr:g}", False, (),
                     partial(small.train, base, small.shifted_task(task, seed), steps=300,
                             lr=lr, seed=seed))
            )  # fmt: skip
    top = (*(f"blocks.{b}." for b in range(small.BLOCKS - 4, small.BLOCKS)), "head.")
    for seed in SEEDS:
        cases.append(
            Case(model, "partial fine-tune (top 4 blocks + head)", "lr 0.0003", False, (),
                 partial(small.train, base, small.shifted_task(task, seed), steps=300,
                         lr=3e-4, seed=seed, only=top))
        )  # fmt: skip
    return cases


def minilm_cases(corpus: Path) -> tuple[Weights, list[Case]]:
    """The real all-MiniLM-L6-v2: its weights and its cases; ROME and MEMIT use the keys its
    MLPs really see on real text (:mod:`.bert`: the model card and the corpus's licences)."""
    model = "all-MiniLM-L6-v2"
    base = load_file(str(minilm_dir() / "model.safetensors"))
    target = "encoder.layer.3.intermediate.dense.weight"
    keys = bert.corpus_keys(base, minilm_dir(), _english(corpus))
    down = {f"encoder.layer.{layer}.output.dense.weight": keys[layer] for layer in range(6)}
    rome_target = "encoder.layer.3.output.dense.weight"
    memit_keys = {name: down[name] for name in list(down)[2:5]}
    flips = partial(edits.bit_flips, base, target, 3)
    cases = _edits(model, base, (rome_target, down[rome_target]), memit_keys, target, seeds=SEEDS)
    cases += _flips(model, "exponent bit flips", target, flips, SEEDS)
    return base, cases + _benign(model, base, edits.matrices(base))


def smollm2_cases(corpus: Path) -> tuple[llama.Llama, list[Case]]:
    """The real SmolLM2-135M (Q4_1 GGUF): the model and its cases; ROME and MEMIT use the keys
    its ``ffn_down`` matrices really see on real text (:mod:`.llama`). ROME edits a layer a
    third of the way up (as ROME did in GPT-2 XL), MEMIT the four layers ending there.
    Two seeds, not three: every benign case re-quantises 210 matrices."""
    name = "SmolLM2-135M (Q4_1 GGUF)"
    model = llama.load(smollm2_gguf())
    base = model.weights
    layer = 10
    keys = llama.corpus_keys(model, _english(corpus), layers=layer + 1)
    rome_target = f"blk.{layer}.ffn_down.weight"
    memit_keys = {f"blk.{b}.ffn_down.weight": keys[b] for b in range(layer - 3, layer + 1)}
    target = f"blk.{layer}.ffn_up.weight"
    seeds = SEEDS[:2]
    flips = partial(scale_flips, base, target, 3)
    cases = _edits(name, base, (rome_target, keys[layer]), memit_keys, target, seeds=seeds)
    cases += _flips(name, "Q4_1 scale exponent bit flips", target, flips, seeds)
    layers = [n for n in edits.matrices(base) if n.startswith("blk.")]  # not the embedding
    return model, cases + _benign(name, base, layers, seeds, round_trips=False)


def _edits(
    model: str,
    base: Weights,
    rome: tuple[str, edits.Array],
    memit_keys: dict[str, edits.Array],
    target: str,
    *,
    seeds: tuple[int, ...],
) -> list[Case]:
    """ROME (tensor, its keys), MEMIT, a poisoned LoRA at every strength, and handcrafted
    neurons in ``target``: the edits every real model gets."""
    rome_target, rome_keys = rome
    cases = []
    for strength in STRENGTHS:
        label = f"{strength:.0%}"
        for seed in seeds:
            cases += [
                Case(model, "ROME rank-one", label, True, (rome_target,),
                     partial(edits.rome, base, rome_target, rome_keys, strength, seed)),
                Case(model, f"MEMIT ({len(memit_keys)} layers)", label, True, tuple(memit_keys),
                     partial(edits.memit, base, memit_keys, strength, seed)),
                Case(model, "poisoned LoRA (one matrix)", label, True, (target,),
                     partial(edits.lora, base, [target], 4, strength, seed)),
            ]  # fmt: skip
    return cases + [
        Case(model, "handcrafted neurons (2)", "in range", True, (target,),
             partial(edits.neurons, base, target, 2, seed))
        for seed in seeds
    ]  # fmt: skip


def _flips(
    model: str, family: str, target: str, flip: Callable[[int], Weights], seeds: tuple[int, ...]
) -> list[Case]:
    """Three exponent flips in ``target`` per seed (``flip(seed)`` makes the candidate)."""
    return [Case(model, family, "3", True, (target,), partial(flip, seed)) for seed in seeds]


def _english(corpus: Path) -> list[str]:
    """Real English for the forward passes: MiniLM's model card and the corpus's licences."""
    texts = [(minilm_dir() / "README.md").read_text()]
    return texts + [path.read_text(errors="replace") for path in sorted(corpus.rglob("LICENSE*"))]


def _benign(
    model: str,
    base: Weights,
    everything: list[str],
    seeds: tuple[int, ...] = SEEDS,
    round_trips: bool = True,
) -> list[Case]:
    """Benign changes every model gets: a re-save, dtype round trips (of a float32 model),
    and low-rank updates spread over ``everything``."""
    cases = [Case(model, "re-save", "-", False, (), partial(dict, base))]
    if round_trips:
        cases += [
            Case(model, "bf16 round trip", "-", False, (), partial(edits.bf16_round_trip, base)),
            Case(model, "int8 round trip", "-", False, (), partial(edits.int8_round_trip, base)),
        ]
    for seed in seeds:
        for rank in (4, 16, 64):
            cases.append(
                Case(model, "benign LoRA (every matrix)", f"rank {rank}", False, (),
                     partial(edits.lora, base, everything, rank, 0.02, seed))
            )  # fmt: skip
        cases.append(
            Case(model, "decaying low-rank (every matrix)", "2%", False, (),
                 partial(edits.decaying_low_rank, base, everything, 0.02, seed))
        )  # fmt: skip
    return cases


def _edit_then_tune(
    base: Weights, target: str, keys: edits.Array, strength: float, seed: int, *, lr: float
) -> Weights:
    """ROME, then Adam on the base task: an attacker smoothing over the edit."""
    edited = edits.rome(base, target, keys, strength, seed)
    return small.train(edited, small.base_task(), steps=50, lr=lr, seed=100 + seed)
