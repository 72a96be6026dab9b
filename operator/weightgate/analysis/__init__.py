"""Weight analysis: read tensors as numbers, tensor by tensor, and compare two versions.

* :mod:`.tensors` (with :mod:`.tensor_info`, :mod:`.safetensors_tensors`,
  :mod:`.gguf_tensors` and :mod:`.dtypes`): a model's tensors opened for streaming, raw
  bytes and decoded values a bounded chunk at a time (bf16/fp8 via ``ml_dtypes``, GGUF
  blocks via ``gguf``);
* :mod:`.manifest_diff`, :mod:`.census` and :mod:`.spectral`: what changed between two
  versions (tensors added, removed, renamed, reshaped; per tensor the elements changed,
  exponent flips, norms, neuron concentration; the spectrum of each changed matrix);
* :mod:`.detectors`: each detector's statistic, threshold and verdict;
* :mod:`.evidence`: for language models, candidate trigger and target tokens (an edit's
  singular directions through the embedding, changed embedding rows), never a verdict;
* :mod:`.diff`: ``weightgate diff``, and :mod:`.report` / :mod:`.sarif` its renderings.
* :mod:`.standalone`: one model's statistics without a baseline (NaN/Inf, per-family
  outliers of RMS, max |w| and kurtosis), which ``scan`` reports as warnings.

Nothing here executes model content or imports Kubernetes; readers parse bytes.
"""
