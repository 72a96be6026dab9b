"""Token strings of a model, for the evidence: from its ``tokenizer.json`` or its GGUF metadata.

``tokenizer.json`` is read with the ``tokenizers`` package (``id_to_token``: the vocabulary
entry as stored); a GGUF model's ``tokenizer.ggml.tokens`` with the project's own bounded
GGUF string-array reader, only up to the largest id asked for.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Tokenizer

from weightgate.analysis.gguf_tensors import TOKENS_KEY, GGUFTensorFile
from weightgate.analysis.tensors import ModelTensors
from weightgate.errors import FormatError
from weightgate.formats.limits import Limits

TOKENIZER_FILE = "tokenizer.json"
MAX_TOKENIZER_BYTES = Limits().max_json_bytes


def vocabulary(
    model: ModelTensors, embedding: str, ids: Iterable[int]
) -> tuple[dict[int, str], str | None, str | None]:
    """(token strings of ``ids``, where they came from, why there are none), for a model.

    The model's ``tokenizer.json`` first, else the GGUF token list of the file holding the
    embedding. A tokenizer that cannot be read leaves ids only and says why: the evidence
    is informational, and the tokenizer file's own change is the manifest's business.
    """
    ids = sorted(set(ids))
    if TOKENIZER_FILE in model.other_files:
        path = model.root / TOKENIZER_FILE
        try:
            size = path.stat().st_size
            if size > MAX_TOKENIZER_BYTES:
                return {}, None, f"{TOKENIZER_FILE} is {size} bytes (over {MAX_TOKENIZER_BYTES})"
            tokenizer = Tokenizer.from_file(str(path))
        except Exception as exc:  # the Rust binding raises plain Exception for bad JSON
            return {}, None, f"{TOKENIZER_FILE} unreadable: {exc}"
        found = {token: tokenizer.id_to_token(token) for token in ids}
        return (
            {token: text for token, text in found.items() if text is not None},
            TOKENIZER_FILE,
            None,
        )
    reader = model.readers[model.tensors[embedding].file]
    if isinstance(reader, GGUFTensorFile):
        try:
            tokens = reader.tokens(ids)
        except FormatError as exc:
            return {}, None, str(exc)
        if tokens is not None:
            return tokens, f"gguf:{TOKENS_KEY}", None
    return {}, None, f"no {TOKENIZER_FILE} or GGUF {TOKENS_KEY}: token ids only"
