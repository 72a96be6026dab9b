"""Weight statistics in ``scan``: NaN/Inf and family outliers, as warnings below the gate.

Runs once per scanned model, after every file was scanned and hashed, because a tensor's
family (the same role in the other layers) spans shards. The statistics are the analysis
layer's (:mod:`weightgate.analysis.standalone`), read from the safetensors and GGUF files
the scan recognised; each finding is reported on the file that holds the tensor, at the
tensor's first byte, with the tensor's name as evidence.

Findings are LOW: below the default gate (``medium``), so a clean model's exit code never
changes, since trained models have natural outliers; ``--fail-on low`` (or a policy) makes
them fail the gate. ``--no-weight-stats`` (``ScanSettings.weight_stats``) skips the pass,
which reads and decodes every weight once more.
"""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

from weightgate.analysis.standalone import Outlier, family_outliers, model_stats
from weightgate.analysis.tensors import ModelTensors
from weightgate.errors import InputError
from weightgate.formats.detect import FileFormat
from weightgate.scan.findings import FileResult, Finding, ScanReport, Severity, rule
from weightgate.scan.settings import ScanSettings

NON_FINITE = rule(
    "weights.non-finite",
    Severity.LOW,
    "A tensor holds NaN or infinite values",
    "No trained weight is NaN or infinite; one poisons every activation it reaches, and a "
    "flipped exponent bit makes one. Find out how the tensor was produced before serving it.",
)
FAMILY_OUTLIER = rule(
    "weights.family-outlier",
    Severity.LOW,
    "A tensor's RMS, largest weight or kurtosis stands far above the same tensor in other layers",
    "A layer scaled up or a single weight blown up (a backdoor or bit-flip attack) stands "
    "out of its family; trained models have natural outliers too, so this warns. Compare "
    "the tensor with the last admitted version (weightgate diff).",
)
UNREADABLE = rule(
    "weights.unreadable",
    Severity.LOW,
    "A tensor file's values could not be read for the weight statistics",
    "Its tensors were left out of the NaN/Inf and outlier checks (a stored type the "
    "analysis does not decode, or a tensor name another file also holds).",
)

_TENSOR_FORMATS = {FileFormat.SAFETENSORS.value, FileFormat.GGUF.value}
_DESCRIBED = {"rms": "RMS", "max-abs": "largest |w|", "kurtosis": "kurtosis"}


def check_weights(root: Path, report: ScanReport, settings: ScanSettings) -> None:
    """Add the weight-statistics findings of the model at ``root`` to ``report``'s files."""
    results = {r.path: r for r in report.files if r.format in _TENSOR_FORMATS}
    if not results:
        return
    with ExitStack() as stack:
        model = ModelTensors(root)
        for path, result in results.items():
            file = root if root.is_file() else root / path
            try:
                model.add_file(file, path, stack, settings.limits)
            except InputError as exc:
                _unreadable(result, str(exc))
        if not model.tensors:
            return
        stats = model_stats(model, settings.jobs)
    for item in stats:
        if item.non_finite:
            _report(
                model, results, item.name, NON_FINITE.id,
                f"{item.non_finite} of {item.elements} values are NaN or infinite",
            )  # fmt: skip
    for outlier in family_outliers(stats):
        _report(model, results, outlier.name, FAMILY_OUTLIER.id, _outlier_message(outlier))


def _outlier_message(outlier: Outlier) -> str:
    what = _DESCRIBED[outlier.statistic]
    ratio = outlier.value / outlier.family_median if outlier.family_median > 0 else float("inf")
    return (
        f"{what} {outlier.value:.3g} is {ratio:.3g}x its family's median "
        f"({outlier.family_median:.3g}), robust z {outlier.z:.3g}"
    )


def _report(
    model: ModelTensors, results: dict[str, FileResult], name: str, rule_id: str, text: str
) -> None:
    tensor = model.tensors[name]
    results[tensor.file].findings.append(
        Finding(rule_id, Severity.LOW, tensor.file, f"tensor {name!r}: {text}", tensor.offset, name)
    )


def _unreadable(result: FileResult, reason: str) -> None:
    # The analysis refuses any header the scanner found a problem in, which is then already
    # a finding of that file at LOW or above: it fails every gate this one would.
    if any(finding.severity >= Severity.LOW for finding in result.findings):
        return
    result.findings.append(
        Finding(UNREADABLE.id, Severity.LOW, result.path, f"weight statistics skipped: {reason}")
    )
