"""What the two versions hold: tensors added, removed, renamed, reshaped or re-typed.

A tensor present in both under one name, with one shape and one stored type, is *common*
and goes on to the census. A removed and an added tensor with identical stored bytes are a
*rename*. Other files (configs, tokenizers) are compared by digest.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from weightgate.analysis.tensors import ModelTensors

_HASH_CHUNK = 8 << 20


@dataclass(frozen=True)
class ManifestDiff:
    """The tensors and files that differ in name, shape or type.

    Attributes:
        common: In both, same shape and stored type (compared element by element next).
        added: Only in the candidate.
        removed: Only in the baseline.
        renamed: (baseline name, candidate name) of tensors with identical stored bytes.
        reshaped: (name, baseline shape, candidate shape).
        retyped: (name, baseline dtype, candidate dtype).
        files: Non-tensor files added, removed or changed, with what happened.
    """

    common: tuple[str, ...]
    added: tuple[str, ...]
    removed: tuple[str, ...]
    renamed: tuple[tuple[str, str], ...]
    reshaped: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...]
    retyped: tuple[tuple[str, str, str], ...]
    files: tuple[tuple[str, str], ...]

    @property
    def structural(self) -> bool:
        """Whether any tensor was added, removed, renamed, reshaped or re-typed."""
        return bool(self.added or self.removed or self.renamed or self.reshaped or self.retyped)


def diff_manifests(baseline: ModelTensors, candidate: ModelTensors) -> ManifestDiff:
    """Compare the two tensor lists (and other files) of a baseline and a candidate."""
    before, after = baseline.tensors, candidate.tensors
    common, reshaped, retyped = [], [], []
    for name in sorted(before.keys() & after.keys()):
        old, new = before[name], after[name]
        if old.shape != new.shape:
            reshaped.append((name, old.shape, new.shape))
        elif old.dtype != new.dtype:
            retyped.append((name, old.dtype, new.dtype))
        else:
            common.append(name)
    removed = sorted(before.keys() - after.keys())
    added = sorted(after.keys() - before.keys())
    renamed = _renames(baseline, candidate, removed, added)
    for old_name, new_name in renamed:
        removed.remove(old_name)
        added.remove(new_name)
    files = [
        (path, "added")
        for path in sorted(candidate.other_files.keys() - baseline.other_files.keys())
    ]
    files += [
        (path, "removed")
        for path in sorted(baseline.other_files.keys() - candidate.other_files.keys())
    ]
    files += [
        (path, "changed")
        for path in sorted(baseline.other_files.keys() & candidate.other_files.keys())
        if baseline.other_files[path] != candidate.other_files[path]
    ]
    return ManifestDiff(
        tuple(common), tuple(added), tuple(removed), tuple(renamed), tuple(reshaped),
        tuple(retyped), tuple(files),
    )  # fmt: skip


def _renames(
    baseline: ModelTensors, candidate: ModelTensors, removed: list[str], added: list[str]
) -> list[tuple[str, str]]:
    # Only tensors of equal stored size can be byte-identical: hash those, nothing else.
    sizes = {candidate.tensors[name].nbytes for name in added}
    gone = {
        _stored_digest(baseline, name): name
        for name in removed
        if baseline.tensors[name].nbytes in sizes
    }
    pairs = []
    for name in added:
        digest = _stored_digest(candidate, name) if gone else None
        if digest in gone:
            pairs.append((gone.pop(digest), name))
    return pairs


def _stored_digest(model: ModelTensors, name: str) -> str:
    info = model.tensors[name]
    hasher = hashlib.sha256(f"{info.dtype}{info.shape}".encode())
    for chunk in model.raw_chunks(name, _HASH_CHUNK):
        hasher.update(chunk)
    return hasher.hexdigest()
