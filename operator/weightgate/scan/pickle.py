"""Pickle rules: what a static walk of a pickle stream means for the gate.

The walk (:func:`weightgate.formats.pickle.walk_stream`) lists every global a pickle
imports and every call loading it would make. Default deny: each global is judged by
:mod:`weightgate.scan.pickle_globals`; known-dangerous ones and globals whose name is
computed at load time are critical, any other global off the allowlist is high. A stream
the walk cannot finish fails closed (medium), with whatever it imported before the
failure still reported. Pickles hidden in string constants (raw, hex or base64) are
reported and scanned in turn, a few levels deep.

Protocol 0 pickles are text, so text files whose first byte is an opcode letter are sent
here too; when the bytes turn out not to be a pickle at all, they are handed back as text
(or as unknown content).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from weightgate.formats import pickle as pickle_format
from weightgate.formats.detect import HEAD_BYTES, FileFormat
from weightgate.formats.pickle import walk_limits
from weightgate.formats.pickle.trace import ArrayFile, GlobalRef, PickleTrace
from weightgate.scan import pickle_globals
from weightgate.scan.context import ScanContext
from weightgate.scan.findings import Rule, Severity, rule

DANGEROUS_GLOBAL = rule(
    "pickle.dangerous-global",
    Severity.CRITICAL,
    "Pickle imports a global known to run code or touch the system",
    "Loading this pickle (torch.load, pickle.load, joblib.load, np.load with "
    "allow_pickle) imports the named global and usually calls it: this is how pickle "
    "malware runs commands, reads files or opens connections. Do not load the file; "
    "obtain the model in a code-free format such as safetensors.",
)
DYNAMIC_GLOBAL = rule(
    "pickle.dynamic-global",
    Severity.CRITICAL,
    "Pickle imports a global whose name is computed while loading",
    "A STACK_GLOBAL takes its module or name from a value built at load time (for "
    "example the result of getattr or str.join), which only serves to hide the real "
    "import from scanners. Treat the file as malicious.",
)
GLOBAL_MUTATION = rule(
    "pickle.global-mutation",
    Severity.CRITICAL,
    "Pickle modifies an imported module, class or function",
    "BUILD, SETITEM or APPEND applied to an imported global rewrites its attributes or "
    "contents (monkey-patching, replacing a function's code); legitimate pickles only "
    "fill in objects they create. Treat the file as malicious.",
)
UNLISTED_GLOBAL = rule(
    "pickle.unlisted-global",
    Severity.HIGH,
    "Pickle imports a global that is not on the allowlist",
    "Any importable callable can run code when a pickle is loaded, so only the globals "
    "needed to rebuild PyTorch, NumPy and standard containers are allowed by default. "
    "If you trust the library named (for example scikit-learn), add it to the policy's "
    "allowed globals (`module.name` or `module.*`); otherwise convert the model.",
)
UNRESOLVED_EXTENSION = rule(
    "pickle.unresolved-extension",
    Severity.HIGH,
    "Pickle imports a global through an unregistered extension code",
    "EXT1/EXT2/EXT4 name a global by a number from the copyreg extension registry. "
    "The code is not registered in a standard interpreter, so the loading process must "
    "have registered it and it may stand for any global.",
)
MALFORMED = rule(
    "pickle.malformed",
    Severity.MEDIUM,
    "Pickle stream is truncated or invalid",
    "The walk stopped at the offset given, so what follows was not examined; loaders "
    "execute everything before that point. Re-export the model with its own tools.",
)
LIMIT_EXCEEDED = rule(
    "pickle.limit-exceeded",
    Severity.MEDIUM,
    "Pickle stream exceeds a scan limit",
    "The walk stopped at a configured bound (opcodes, stack items, memo entries, nesting "
    "of embedded pickles), so the rest was not examined. Raise the named limit if the "
    "model is legitimately that large.",
)
JOBLIB_ARRAY = rule(
    "pickle.joblib-array-unreadable",
    Severity.MEDIUM,
    "Joblib array data whose size cannot be determined",
    "joblib.load reads raw array bytes right after each NumpyArrayWrapper; when its "
    "shape or dtype cannot be read statically, the scan cannot tell where the pickle "
    "resumes, so the rest was not examined.",
)
JOBLIB_EXTERNAL_FILE = rule(
    "pickle.joblib-external-file",
    Severity.HIGH,
    "Joblib array wrapper loads a file outside the model's directory",
    "A joblib NDArrayWrapper (joblib <= 0.9) makes joblib.load call "
    "np.load(os.path.join(<directory of the pickle>, filename), allow_pickle=True). This "
    "file name is absolute, climbs out of the directory or is computed at load time, so "
    "loading reads (and unpickles) a file of the attacker's choosing on the host.",
)
JOBLIB_SIBLING_FILE = rule(
    "pickle.joblib-sibling-file",
    Severity.LOW,
    "Joblib array wrapper loads a file beside the pickle",
    "Old joblib dumps (<= 0.9) keep each array in its own .npy file, which joblib.load "
    "reads with np.load(allow_pickle=True). Scan that file together with this one; "
    "re-dump with a current joblib to get a single file.",
)
EMBEDDED_PICKLE = rule(
    "pickle.embedded-pickle",
    Severity.MEDIUM,
    "A string constant holds another pickle",
    "A pickle stored inside a str or bytes value (raw, hex or base64) is a common way to "
    "smuggle a second-stage payload past scanners; the nested pickle's own findings "
    "are listed under the member path.",
)
TRAILING_DATA = rule(
    "pickle.trailing-data",
    Severity.LOW,
    "Bytes after the last pickle",
    "pickle.load ignores bytes after STOP; they are not executed, but nothing should be "
    "there. Check how the file was written.",
)


def scan_pickle(ctx: ScanContext, data: memoryview) -> None:
    """Scan a pickle stream (or text that only looked like protocol 0)."""
    scan_pickle_stream(ctx, data)


def scan_pickle_stream(
    ctx: ScanContext,
    data: memoryview,
    *,
    base_offset: int = 0,
    reroute: bool = True,
) -> None:
    """Walk ``data`` as a pickle stream and report on it.

    Args:
        ctx: Where findings go.
        data: The stream.
        base_offset: Where ``data`` starts in the object ``ctx`` describes (a NumPy
            payload starts after its header); findings carry file offsets.
        reroute: Hand bytes that are not a pickle at all back as text or unknown content.
            Off when the container says the payload is a pickle.
    """
    trace = pickle_format.walk_stream(data, walk_limits(ctx.limits), base_offset=base_offset)
    if reroute and not trace.is_pickle:
        ctx.scan_as(FileFormat.TEXT if _is_text(data) else FileFormat.UNKNOWN, data)
        return
    _report(ctx, trace, data, base_offset, nesting=0)


def _is_text(data: memoryview) -> bool:
    head = bytes(data[:HEAD_BYTES])
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # Only a head cut inside a multi-byte character may end badly.
        return len(data) > HEAD_BYTES and exc.start >= len(head) - 3
    return True


_EVIDENCE_MAX = 200  # characters of a name quoted in a finding


def _clip(text: str) -> str:
    if len(text) <= _EVIDENCE_MAX:
        return text
    return f"{text[:_EVIDENCE_MAX]}... ({len(text)} characters)"


@dataclass
class _Group:
    rule: Rule
    first: GlobalRef
    evidence: str
    detail: str
    offsets: set[int] = field(default_factory=set)
    called: bool = False


def _report(
    ctx: ScanContext, trace: PickleTrace, data: memoryview, base_offset: int, nesting: int
) -> None:
    for group in _group_globals(ctx, trace):
        first = group.first
        called = " and calls it" if group.called else " (not called directly)"
        count = len(group.offsets)
        more = f"; {count} imports in all" if count > 1 else ""
        ctx.report(
            group.rule,
            f"{first.how} at offset {first.offset:#x} imports `{group.evidence}`{called}"
            f"{group.detail}{more}",
            offset=first.offset,
            evidence=group.evidence,
        )
    seen: set[tuple[str, int]] = set()  # alternative readings may revisit an opcode
    for site in trace.mutations:
        if site.target is None or (site.kind, site.offset) in seen:
            continue
        seen.add((site.kind, site.offset))
        ctx.report(
            GLOBAL_MUTATION,
            f"{site.kind} at offset {site.offset:#x} modifies the imported global "
            f"`{_clip(site.target.dotted)}`",
            offset=site.offset,
            evidence=_clip(site.target.dotted),
        )
    error = trace.error
    if error is not None:
        chosen = {"malformed": MALFORMED, "limit": LIMIT_EXCEEDED, "joblib": JOBLIB_ARRAY}
        ctx.report(
            chosen[error.kind],
            f"{error.message} (offset {error.offset:#x}); "
            f"{len(trace.pickles)} complete pickle(s) before it",
            offset=error.offset,
        )
    for anomaly in {a.offset: a for a in trace.anomalies}.values():
        ctx.report(
            MALFORMED, f"{anomaly.message} (offset {anomaly.offset:#x})", offset=anomaly.offset
        )
    if trace.trailing is not None:
        offset, length = trace.trailing
        ctx.report(
            TRAILING_DATA,
            f"the {length} bytes from offset {offset:#x} to the end are not a pickle",
            offset=offset,
        )
    for array_file in trace.array_files:
        _report_array_file(ctx, array_file)
    if trace.strings_dropped:
        ctx.report(
            LIMIT_EXCEEDED,
            f"{trace.strings_dropped} string constants were not checked for embedded pickles",
        )
    _scan_embedded(ctx, trace, data, base_offset, nesting)


_PATH_SEPARATORS = ("/", "\\", ":", "\x00")


def _report_array_file(ctx: ScanContext, array_file: ArrayFile) -> None:
    name = array_file.filename
    where = f"BUILD at offset {array_file.offset:#x}"
    if name is None or name in ("", ".", "..") or any(sep in name for sep in _PATH_SEPARATORS):
        shown = "a computed value" if name is None else repr(_clip(name))
        ctx.report(
            JOBLIB_EXTERNAL_FILE,
            f"{where} makes joblib.load np.load(allow_pickle=True) the file {shown}",
            offset=array_file.offset,
            evidence=None if name is None else _clip(name),
        )
        return
    ctx.report(
        JOBLIB_SIBLING_FILE,
        f"{where} makes joblib.load np.load(allow_pickle=True) the file {_clip(name)!r} "
        "next to this one",
        offset=array_file.offset,
        evidence=_clip(name),
    )


def _group_globals(ctx: ScanContext, trace: PickleTrace) -> list[_Group]:
    groups: dict[tuple[str, str], _Group] = {}
    verdicts: dict[tuple[str, str], tuple[pickle_globals.Verdict, str]] = {}
    allowed = ctx.settings.allowed_globals
    for ref in trace.globals:
        if not ref.resolved:
            key = ("ext", str(ref.ext_code))
            if key not in groups:
                groups[key] = _Group(
                    UNRESOLVED_EXTENSION,
                    ref,
                    f"extension code {ref.ext_code}",
                    "; the copyreg registry does not resolve it",
                )
        elif not ref.constant:
            key = ("dynamic", ref.origin)
            if key not in groups:
                groups[key] = _Group(
                    DYNAMIC_GLOBAL, ref, _clip(ref.dotted), f" ({_clip(ref.origin)})"
                )
        else:
            names = (ref.module, ref.name)
            if names not in verdicts:
                verdicts[names] = pickle_globals.judge(ref.module, ref.name, allowed)
            verdict, entry = verdicts[names]
            if verdict is pickle_globals.Verdict.ALLOWED:
                continue
            key = ("global", ref.dotted)
            if key not in groups:
                if verdict is pickle_globals.Verdict.DENIED:
                    groups[key] = _Group(
                        DANGEROUS_GLOBAL, ref, _clip(ref.dotted), f"; deny-list entry: {entry}"
                    )
                else:
                    groups[key] = _Group(UNLISTED_GLOBAL, ref, _clip(ref.dotted), "")
        group = groups[key]
        group.offsets.add(ref.offset)  # alternative readings may revisit an opcode
        group.called = group.called or ref.called
    return sorted(groups.values(), key=lambda g: g.first.offset)


def _scan_embedded(
    ctx: ScanContext, trace: PickleTrace, data: memoryview, base_offset: int, nesting: int
) -> None:
    limits = ctx.limits
    with memoryview(data) as raw, raw.cast("B") as view:
        for string in trace.strings:
            if string.length > limits.max_string_bytes:
                ctx.report(
                    LIMIT_EXCEEDED,
                    f"a {string.length}-byte string constant was not checked for an "
                    f"embedded pickle (limits.max_string_bytes)",
                    offset=string.op_offset,
                )
                continue
            found = pickle_format.embedded_pickle(
                view, string, base_offset, limits.max_string_bytes
            )
            if found is None:
                continue
            form, payload = found
            try:
                _scan_one_embedded(
                    ctx,
                    op_offset=string.op_offset,
                    is_text=string.is_text,
                    form=form,
                    payload=payload,
                    nesting=nesting,
                )
            finally:
                if isinstance(payload, memoryview):
                    payload.release()


def _scan_one_embedded(
    ctx: ScanContext,
    *,
    op_offset: int,
    is_text: bool,
    form: str,
    payload: bytes | memoryview,
    nesting: int,
) -> None:
    inner = pickle_format.walk_stream(payload, walk_limits(ctx.limits))
    if not (inner.pickles or (inner.started_with_proto and inner.globals)):
        return
    kind = "str" if is_text else "bytes"
    encoded = "a pickle" if form == "raw" else f"a {form}-encoded pickle"
    ctx.report(
        EMBEDDED_PICKLE,
        f"the {kind} constant at offset {op_offset:#x} holds {encoded} "
        f"({len(payload)} bytes); it was scanned as a member",
        offset=op_offset,
        evidence=f"{form} pickle in a {kind} constant",
    )
    if nesting + 1 > ctx.limits.max_nested_pickle_depth:
        ctx.report(
            LIMIT_EXCEEDED,
            f"the pickle embedded at offset {op_offset:#x} is nested deeper than "
            f"{ctx.limits.max_nested_pickle_depth} levels (limits.max_nested_pickle_depth) "
            "and was not scanned",
            offset=op_offset,
        )
        return
    child = ctx.member(f"embedded-pickle@{op_offset:#x}")
    with memoryview(payload) as inner_view:
        _report(child, inner, inner_view, 0, nesting + 1)
