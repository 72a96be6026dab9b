"""Generate a Llama-shaped safetensors model of a given size, sharded the way Hugging Face does.

The header is written here rather than with the safetensors package because that package
needs every tensor in memory at once; a 4 GiB model is streamed in 16 MiB pieces instead.
The layout matches what safetensors writes (JSON header padded with spaces to a multiple of
8, tensors back to back in header order), and ``test_bench_smoke`` checks that the
safetensors package opens the result.

Tensor bytes are random (SFC64, about 3 GB/s), so nothing is sparse or compressible and
every byte really has to be read and hashed. A ``finite`` recipe writes weights instead
(bf16 of N(0, 0.02): no NaN or Inf, as the weight diff needs), and ``delta_seed`` adds a
dense N(0, 0.002) change to them, the shape of a fine-tune, so that two recipes differing
only there are a baseline and its fine-tuned candidate. Generated models are cached: a
directory is reused when its ``.done`` stamp beside it names the same recipe.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

BF16_BYTES = 2
WRITE_PIECE = 16 * 1024 * 1024
RECIPE_VERSION = 1


@dataclass(frozen=True)
class Tensor:
    """One tensor of the generated model: its name and shape (all BF16)."""

    name: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        """Size of the tensor's data."""
        count = 1
        for dim in self.shape:
            count *= dim
        return count * BF16_BYTES


@dataclass(frozen=True)
class Recipe:
    """What to generate; two equal recipes produce byte-identical files."""

    total_bytes: int
    max_shard_bytes: int
    seed: int = 0
    version: int = RECIPE_VERSION
    finite: bool = False
    delta_seed: int | None = None

    @property
    def key(self) -> str:
        """A directory name that identifies the recipe."""
        key = f"llama-{self.total_bytes}-shard{self.max_shard_bytes}-seed{self.seed}"
        if self.finite:
            key += "-finite"
        if self.delta_seed is not None:
            key += f"-delta{self.delta_seed}"
        return key


def llama_tensors(total_bytes: int) -> tuple[dict[str, int], list[Tensor]]:
    """A Llama-style config and tensor list whose data adds up to about ``total_bytes``.

    The hidden size is the largest of a ladder that still leaves room for 16 layers; the
    layer count then fills the rest (so the size lands within half a layer of the target).
    Grouped-query attention (8 KV heads of 64) like TinyLlama, so the tensors have the
    uneven sizes real checkpoints have.
    """
    for hidden in (4096, 2048, 1024, 512, 256, 128, 64):
        vocab = 32000 if hidden >= 1024 else 16 * hidden
        intermediate = (hidden * 11 // 4 + 63) // 64 * 64
        kv = min(hidden, 8 * 64)
        per_layer = BF16_BYTES * (
            2 * hidden * hidden + 2 * kv * hidden + 3 * hidden * intermediate + 2 * hidden
        )
        fixed = BF16_BYTES * (2 * vocab * hidden + hidden)
        if fixed + 16 * per_layer <= total_bytes or hidden == 64:
            break
    layers = max(1, round((total_bytes - fixed) / per_layer))
    config = {
        "hidden_size": hidden,
        "intermediate_size": intermediate,
        "num_hidden_layers": layers,
        "num_attention_heads": hidden // 64,
        "num_key_value_heads": kv // 64,
        "vocab_size": vocab,
    }
    tensors = [Tensor("model.embed_tokens.weight", (vocab, hidden))]
    for i in range(layers):
        prefix = f"model.layers.{i}"
        tensors += [
            Tensor(f"{prefix}.input_layernorm.weight", (hidden,)),
            Tensor(f"{prefix}.self_attn.q_proj.weight", (hidden, hidden)),
            Tensor(f"{prefix}.self_attn.k_proj.weight", (kv, hidden)),
            Tensor(f"{prefix}.self_attn.v_proj.weight", (kv, hidden)),
            Tensor(f"{prefix}.self_attn.o_proj.weight", (hidden, hidden)),
            Tensor(f"{prefix}.post_attention_layernorm.weight", (hidden,)),
            Tensor(f"{prefix}.mlp.gate_proj.weight", (intermediate, hidden)),
            Tensor(f"{prefix}.mlp.up_proj.weight", (intermediate, hidden)),
            Tensor(f"{prefix}.mlp.down_proj.weight", (hidden, intermediate)),
        ]
    tensors += [
        Tensor("model.norm.weight", (hidden,)),
        Tensor("lm_head.weight", (vocab, hidden)),
    ]
    return config, tensors


def shard(tensors: list[Tensor], max_shard_bytes: int) -> list[list[Tensor]]:
    """Split tensors greedily in order, as ``save_pretrained(max_shard_size=...)`` does."""
    shards: list[list[Tensor]] = [[]]
    size = 0
    for tensor in tensors:
        if shards[-1] and size + tensor.nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(tensor)
        size += tensor.nbytes
    return shards


def write_safetensors(
    path: Path,
    tensors: list[Tensor],
    rng: np.random.Generator,
    finite: bool = False,
    delta: np.random.Generator | None = None,
) -> None:
    """Write one safetensors file with random BF16 data (or weights), streamed in pieces."""
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for tensor in tensors:
        header[tensor.name] = {
            "dtype": "BF16",
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + tensor.nbytes],
        }
        offset += tensor.nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    with open(path, "wb") as out:
        out.write(len(encoded).to_bytes(8, "little"))
        out.write(encoded)
        remaining = offset
        while remaining:
            count = min(remaining, WRITE_PIECE)
            if finite:
                out.write(_weights(rng, delta, count // BF16_BYTES).tobytes())
            else:
                words = rng.integers(0, 2**64 - 1, size=(count + 7) // 8, dtype=np.uint64)
                out.write(words.data.cast("B")[:count])
            remaining -= count


def _weights(
    rng: np.random.Generator, delta: np.random.Generator | None, count: int
) -> np.ndarray[tuple[int], np.dtype[np.uint16]]:
    """``count`` bf16 weights as their bit patterns (the top half of each float32)."""
    values = rng.standard_normal(count, dtype=np.float32) * np.float32(0.02)
    if delta is not None:
        values += delta.standard_normal(count, dtype=np.float32) * np.float32(0.002)
    return (values.view(np.uint32) >> 16).astype(np.uint16)


def generate(recipe: Recipe, target: Path) -> None:
    """Write the model described by ``recipe`` into the empty directory ``target``."""
    config, tensors = llama_tensors(recipe.total_bytes)
    shards = shard(tensors, recipe.max_shard_bytes)
    rng = np.random.Generator(np.random.SFC64(recipe.seed))
    delta = None
    if recipe.delta_seed is not None:
        delta = np.random.Generator(np.random.SFC64(recipe.delta_seed))
    weight_map: dict[str, str] = {}
    for number, members in enumerate(shards, start=1):
        name = (
            "model.safetensors"
            if len(shards) == 1
            else f"model-{number:05d}-of-{len(shards):05d}.safetensors"
        )
        write_safetensors(target / name, members, rng, recipe.finite, delta)
        weight_map.update({tensor.name: name for tensor in members})
    if len(shards) > 1:
        index = {
            "metadata": {"total_size": sum(t.nbytes for t in tensors)},
            "weight_map": weight_map,
        }
        (target / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
    model_config = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", **config}
    model_config["torch_dtype"] = "bfloat16"
    (target / "config.json").write_text(json.dumps(model_config, indent=2))


def cached_model(cache: Path, recipe: Recipe, log: bool = True) -> Path:
    """The directory of the model for ``recipe`` under ``cache``, generated if missing."""
    target = cache / recipe.key
    stamp = cache / f"{recipe.key}.done"
    wanted = json.dumps(asdict(recipe), sort_keys=True)
    if target.is_dir() and stamp.is_file() and stamp.read_text() == wanted:
        return target
    if log:
        print(f"generating {recipe.total_bytes / 2**30:.2f} GiB model in {target} ...", flush=True)
    shutil.rmtree(target, ignore_errors=True)
    stamp.unlink(missing_ok=True)
    target.mkdir(parents=True)
    generate(recipe, target)
    # Written last, so an interrupted generation is never mistaken for a complete one.
    stamp.write_text(wanted)
    return target


def model_files(directory: Path) -> list[Path]:
    """Every regular file under ``directory``, in a stable order."""
    found = [Path(root, name) for root, _, names in os.walk(directory) for name in names]
    return sorted(path for path in found if path.is_file())
