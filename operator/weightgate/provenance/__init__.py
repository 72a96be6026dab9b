"""Provenance: what was admitted, who asked, and what it replaced, signed and chained.

Small pieces, each with one job (as in the OpenSSF model_signing library):

* :mod:`.manifest`: the model_signing "files" manifest of a model directory (sha256 per
  file, ordered by POSIX path components, the root digest over them);
* :mod:`.keys`: ECDSA P-256 keys in PEM files;
* :mod:`.dsse`, :mod:`.statement`, :mod:`.bundle`: DSSE envelopes of in-toto Statements v1,
  saved as Sigstore bundles v0.3, the format model_signing and cosign read;
* :mod:`.model_signature`: ``weightgate sign`` / ``verify``, interoperable with model_signing;
* :mod:`.record`: the admission record (a SLSA verification summary with weightgate's
  extension fields);
* :mod:`.store` and :mod:`.chain`: the record store (one hash chain per lineage, signed
  anchors of the chain heads) and the check that finds edits, deletions and forgeries.

Nothing here imports Kubernetes; the admission webhook and the CLI pass in what they know.
"""
