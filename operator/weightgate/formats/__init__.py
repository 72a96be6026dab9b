"""Readers that parse model files as bytes and never execute anything.

One module per format (a package of small modules where a format needs several: ``pickle``,
``zip``, ``tar``, ``hdf5``, ``gguf``, ``safetensors``, ``jinja``), in the manner of
pypa/packaging's ``_elffile``: magic numbers named, every size and count read from the
file checked against a limit before use, and one :class:`~weightgate.errors.FormatError`
raised with the offset and the cause chained. Nothing here imports from
:mod:`weightgate.scan`; readers return plain structures.
"""
