"""Scanning: rules over what the readers in :mod:`weightgate.formats` return.

Each format has one scanner module here (``pickle``, ``archive``, ``safetensors``, ...)
that turns reader output into :class:`~weightgate.scan.findings.Finding` objects.
:mod:`weightgate.scan.engine` walks files, hashes them and dispatches by detected format.
"""
