"""Weight analysis: read tensors as numbers, tensor by tensor, and compare two versions.

* :mod:`.tensors`: a model's tensors (every safetensors or GGUF file of a directory) opened
  for streaming: raw stored bytes and values upcast to float64, a bounded chunk at a time;
* :mod:`.dtypes`: how each stored dtype becomes numbers (bf16, fp16, fp8, integers);
* :mod:`.gguf_tensors`: GGUF tensors, dequantised with the ``gguf`` package;
* :mod:`.manifest_diff` and :mod:`.census`: what changed between two versions, tensor by
  tensor (added, removed, renamed, reshaped; elements changed, exponent bits flipped);
* :mod:`.diff`: the ``weightgate diff`` report and its verdicts.

Nothing here executes model content or imports Kubernetes; readers parse bytes.
"""
