"""Scanner for Keras models: the legacy ``.h5`` file and the model config of both formats.

A Keras model is code-free except where its config says otherwise, and the config says so
in a few known ways: Lambda layers (Python bytecode, marshalled and base64-encoded, run by
``marshal.loads`` on load whenever safe_mode is off, and always for ``.h5`` files,
CVE-2024-3660, CVE-2025-9905), ``__lambda__`` function objects, objects whose ``module``
names a package outside Keras and TensorFlow (imported on load, CVE-2025-1550), custom
registered objects, TFOpLambda layers (they call a TensorFlow function by name), and Keras'
own functions that switch safe mode off or fetch files (CVE-2025-9906, CVE-2025-8747), and
lookup layers whose ``vocabulary`` is a string: IndexLookup.set_vocabulary reads it as a
file path of the loading host (tf.io.gfile, so gs:// and hdfs:// too).

``.keras`` archives reach :func:`scan_keras_config` through the JSON scanner (their
``config.json``), legacy ``.h5`` files through :mod:`weightgate.scan.hdf5` and SavedModels
through :mod:`weightgate.scan.keras_metadata`. Bytecode is never unmarshalled: evidence
shows its size, first bytes and the identifiers it contains.
"""

from __future__ import annotations

import base64
import binascii
import re

from weightgate.scan.context import ScanContext
from weightgate.scan.findings import Rule, Severity, rule
from weightgate.scan.keras_torch import scan_torch_module

LAMBDA_LAYER = rule(
    "keras.lambda-layer",
    Severity.CRITICAL,
    "A Lambda layer carries Python code",
    "Keras rebuilds a Lambda layer's function from marshalled bytecode in the config and "
    "runs it: on load for .h5 files (whatever safe_mode says) and .keras files loaded with "
    "safe_mode=False. A Lambda that names a function instead (high) calls it with "
    "arguments from the config. Load only models whose Lambda code you wrote; better, "
    "replace Lambda layers with registered custom layers.",
)
PYTHON_BYTECODE = rule(
    "keras.python-bytecode",
    Severity.CRITICAL,
    "A serialized Python function (__lambda__) in the config",
    "Keras 3 stores lambdas used as activations, losses or other arguments as marshalled "
    "bytecode, run when the model is loaded with safe_mode=False.",
)
CUSTOM_MODULE = rule(
    "keras.custom-module",
    Severity.HIGH,
    "The config imports a module outside Keras and TensorFlow",
    "Keras imports the module an object names to rebuild it; a module outside Keras and "
    "TensorFlow (os, builtins, a user package) runs its code or hands out its functions "
    "(CVE-2025-1550). Allow the package in policy only if you ship and trust it.",
)
CUSTOM_OBJECT = rule(
    "keras.custom-object",
    Severity.HIGH,
    "The config uses a registered custom object from outside Keras",
    "The model only loads with code registered by the user (register_keras_serializable); "
    "that code runs on load. Review the package named and allow it in policy.",
)
TF_OP_LAMBDA = rule(
    "keras.tf-op-lambda",
    Severity.HIGH,
    "A TFOpLambda layer names an unexpected function",
    "TFOpLambda and SlicingOpLambda layers call a TensorFlow API function by name. A name "
    "that is not a TensorFlow API symbol, or one that runs Python or touches files "
    "(py_function, numpy_function, io.write_file, gfile), has no place in a model.",
)
UNSAFE_FUNCTION = rule(
    "keras.unsafe-function",
    Severity.HIGH,
    "The config calls a Keras function that weakens loading",
    "enable_unsafe_deserialization and set_global_attribute turn safe_mode off from "
    "inside the config (CVE-2025-9906); get_file downloads files and load_model/"
    "load_weights (and TFSMLayer) load further models (CVE-2025-8747); a lookup layer "
    "whose vocabulary is an absolute or remote path reads that file on load. No model "
    "needs them.",
)
CONFIG_UNREADABLE = rule(
    "keras.config-unreadable",
    Severity.MEDIUM,
    "The Keras model config could not be read",
    "The config decides what code a Keras model runs, so a file whose config cannot be "
    "checked fails closed. Re-save the model with Keras' default settings.",
)
ALLOWED_MODULE_ROOTS = frozenset(
    {"keras", "tf_keras", "tensorflow", "keras_hub", "keras_nlp", "keras_cv"}
)
"""Top-level packages a config may name: Keras, TensorFlow and the Keras team's own
model libraries (keras_hub configs name ``keras_hub.src.models...``)."""

UNSAFE_FUNCTIONS = frozenset(
    {"enable_unsafe_deserialization", "set_global_attribute", "get_file", "load_model",
     "load_weights"}
)  # fmt: skip
"""Keras functions used as gadgets in safe_mode bypasses (see UNSAFE_FUNCTION)."""

VOCABULARY_LAYERS = frozenset({"StringLookup", "IntegerLookup", "IndexLookup", "TextVectorization"})
"""Layers whose string ``vocabulary`` is a file read on load (a list is the vocabulary)."""

TF_OP_LAMBDA_CLASSES = frozenset({"TFOpLambda", "SlicingOpLambda"})
EXTERNAL_MODEL_CLASSES = frozenset({"TFSMLayer"})
UNSAFE_TF_SYMBOLS = frozenset(
    {"py_function", "numpy_function", "py_func", "eager_py_func", "pyfunc",
     "pyfuncstateless", "eagerpyfunc", "write_file", "writefile", "read_file", "readfile",
     "matching_files", "matchingfiles"}
)  # fmt: skip
"""Last components (lower-cased) of TensorFlow functions that run Python or touch files."""

MAX_CONFIG_DEPTH = 500
"""Nesting of config objects walked (real models nest a few dozen levels)."""

MAX_HINT_CHARS = 4096
"""Base64 characters decoded for a bytecode hint."""

_OUTSIDE_PATH = re.compile(r"^(?:[/\\~]|[A-Za-z]:)|://|(?:^|[/\\])\.\.(?:[/\\]|$)")
"""Absolute, home-relative, drive-letter or remote (scheme://) paths, or ones climbing out
with ``..``: a file outside whatever directory the model was loaded from."""
_TF_SYMBOL = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")
_IDENTIFIER = re.compile(rb"[A-Za-z_][A-Za-z0-9_]{2,}")


def scan_keras_config(ctx: ScanContext, config: object, *, offset: int | None = None) -> None:
    """Check a parsed Keras config (``config.json`` of a .keras file or an .h5 attribute).

    Every object of the config is visited, so models nested in layers (Functional inside
    Sequential, wrappers, compile configs) are covered. Content that is not a Keras config
    (no objects with a ``class_name``) produces nothing.

    Args:
        ctx: Where findings go.
        config: The parsed JSON.
        offset: Byte offset to give findings (the .h5 attribute message), if known.
    """
    _ConfigChecker(ctx, offset).walk(config)


class _ConfigChecker:
    def __init__(self, ctx: ScanContext, offset: int | None) -> None:
        self.ctx = ctx
        self.offset = offset
        # Function objects already reported as part of their Lambda layer.
        self.handled: set[int] = set()

    def report(
        self, rule_: Rule, message: str, evidence: str, severity: Severity | None = None
    ) -> None:
        self.ctx.report(rule_, message, offset=self.offset, evidence=evidence, severity=severity)

    def walk(self, config: object) -> None:
        limit = self.ctx.limits.max_metadata_entries
        stack: list[tuple[object, int]] = [(config, 0)]
        seen: set[int] = set()
        while stack:
            item, depth = stack.pop()
            if isinstance(item, dict):
                children = list(item.values())
            elif isinstance(item, list | tuple):
                children = list(item)
            else:
                continue
            if id(item) in seen:
                continue  # YAML-style shared references: visit once, never loop
            seen.add(id(item))
            if depth > MAX_CONFIG_DEPTH or len(seen) > limit:
                self.report(
                    CONFIG_UNREADABLE,
                    f"config nested deeper than {MAX_CONFIG_DEPTH} or with more than {limit} "
                    "objects; the rest was not checked",
                    evidence="config",
                )
                return
            if (
                isinstance(item, dict)
                and isinstance(item.get("class_name"), str)
                and id(item) not in self.handled
            ):
                self.check_object(item)
            # Reversed, so that findings come out in document order.
            stack.extend((child, depth + 1) for child in reversed(children))

    def check_object(self, obj: dict[object, object]) -> None:
        class_name = str(obj["class_name"])
        config = obj.get("config")
        inner = config if isinstance(config, dict) else {}
        label = f"{_name_of(obj, inner)!r} ({class_name})"
        if class_name == "Lambda":
            self.lambda_layer(inner, label)
        elif class_name == "__lambda__":
            hint = self.lambda_object_hint(obj)
            self.report(PYTHON_BYTECODE, f"serialized Python function: {hint}", evidence=label)
        elif class_name in TF_OP_LAMBDA_CLASSES:
            self.tf_op(inner.get("function"), label)
        elif class_name in EXTERNAL_MODEL_CLASSES:
            path = str(inner.get("filepath"))[:200]
            # Same gadget family as load_model: a model fetched from a path named in the
            # config (TFSMLayer), whose graph can read and write files when it runs.
            self.report(UNSAFE_FUNCTION, f"{label} loads the SavedModel at {path!r}", label)
        elif class_name in VOCABULARY_LAYERS and isinstance(inner.get("vocabulary"), str):
            self.vocabulary_file(str(inner["vocabulary"]), label)
        elif class_name == "TorchModuleWrapper" and "module" in inner:
            self.torch_module(inner["module"], _name_of(obj, inner), label)
        module = obj.get("module")
        registered = obj.get("registered_name")
        if isinstance(module, str) and not _allowed_module(module):
            target = config if class_name == "function" and isinstance(config, str) else ""
            qualified = f"{module}.{target or class_name}"
            self.report(CUSTOM_MODULE, f"{label} is loaded from module {module!r}", qualified)
        else:
            # Keras 3 keeps "package>Name" in registered_name, Keras 2 in class_name.
            for registration in (registered, class_name):
                if isinstance(registration, str) and ">" in registration:
                    if not _allowed_module(registration.split(">", 1)[0]):
                        self.report(
                            CUSTOM_OBJECT,
                            f"{label} is registered as {registration!r}",
                            registration,
                        )
                    break
        function = config if class_name == "function" and isinstance(config, str) else class_name
        if function in UNSAFE_FUNCTIONS:
            where = module if isinstance(module, str) else "keras"
            self.report(
                UNSAFE_FUNCTION,
                f"{label} refers to {where}.{function}",
                f"{where}.{function}",
            )

    def lambda_layer(self, config: dict[object, object], label: str) -> None:
        code: list[str] = []
        named = ""
        function = _untuple(config.get("function"))
        if isinstance(function, dict) and function.get("class_name") != "__lambda__":
            # Keras 3 reference to a named function; the walk still checks its module.
            named = f"{function.get('module')}.{function.get('config')}"
        elif isinstance(function, dict):  # Keras 3 serialized lambda
            code.append(self.lambda_object_hint(function))
        elif isinstance(function, list | tuple) and function:  # Keras 2: [code, defaults, closure]
            code.append(_code_hint(function[0]))
        elif isinstance(function, str) and config.get("function_type") == "function":
            named = f"{config.get('module')}.{function}"
        else:
            code.append(_code_hint(function))
        shape = _untuple(config.get("output_shape"))
        if config.get("output_shape_type") == "lambda":
            code.append(
                "output_shape " + _code_hint(shape[0] if isinstance(shape, list) else shape)
            )
        elif isinstance(shape, dict) and shape.get("class_name") == "__lambda__":
            code.append("output_shape " + self.lambda_object_hint(shape))
        if code:
            self.report(LAMBDA_LAYER, f"Lambda layer {label}: {'; '.join(code)}", label)
        else:
            self.report(
                LAMBDA_LAYER,
                f"Lambda layer {label} calls function {named}",
                label,
                severity=Severity.HIGH,
            )

    def lambda_object_hint(self, function: dict[object, object]) -> str:
        """Hint for a ``__lambda__`` object reported with its layer (not reported again)."""
        self.handled.add(id(function))
        inner = function.get("config")
        value = inner.get("code", inner.get("value")) if isinstance(inner, dict) else inner
        if isinstance(value, list | tuple) and value:  # {"value": [code, defaults, closure]}
            value = value[0]
        return _code_hint(value)

    def vocabulary_file(self, path: str, label: str) -> None:
        # Keras 3 keeps adapted vocabularies in the config or the archive's assets; a
        # string here is a path that is opened when the layer is built on load. A plain
        # relative name is only read from the loader's working directory: low.
        outside = _OUTSIDE_PATH.search(path) is not None
        self.report(
            UNSAFE_FUNCTION,
            f"{label} reads its vocabulary from the file {path[:200]!r} on load",
            path[:200],
            severity=None if outside else Severity.LOW,
        )

    def torch_module(self, value: object, name: str, label: str) -> None:
        # Findings of the pickle itself go to the member; here only "could not check".
        problem = scan_torch_module(self.ctx, value, name)
        if problem is not None:
            self.report(CONFIG_UNREADABLE, f"{label}: {problem}", label)

    def tf_op(self, symbol: object, label: str) -> None:
        if not isinstance(symbol, str) or not _TF_SYMBOL.fullmatch(symbol):
            self.report(
                TF_OP_LAMBDA,
                f"{label} names {str(symbol)[:100]!r}, not a TensorFlow API symbol",
                label,
            )
            return
        parts = symbol.lower().split(".")
        if parts[-1] in UNSAFE_TF_SYMBOLS or "gfile" in parts:
            self.report(
                TF_OP_LAMBDA,
                f"{label} calls tf.{symbol}, which runs Python or touches files",
                label,
            )


def _untuple(value: object) -> object:
    # tf.keras's json_utils (SavedModel keras_metadata.pb) writes tuples as
    # {"class_name": "__tuple__", "items": [...]}; h5 and .keras configs write lists.
    if isinstance(value, dict) and value.get("class_name") == "__tuple__":
        return value.get("items")
    return value


def _allowed_module(module: str) -> bool:
    return module.split(".", 1)[0] in ALLOWED_MODULE_ROOTS


def _name_of(obj: dict[object, object], config: dict[object, object]) -> str:
    name = obj.get("name", config.get("name"))
    return str(name)[:100] if name is not None else "<unnamed>"


def _code_hint(code: object) -> str:
    """Describe serialized code without running it: size, first bytes, identifiers."""
    if not isinstance(code, str):
        return f"function of unexpected form ({type(code).__name__})"
    compact = "".join(code[: MAX_HINT_CHARS * 2].split())
    head = compact[: MAX_HINT_CHARS - MAX_HINT_CHARS % 4]
    try:
        raw = base64.b64decode(head, validate=True) if head else b""
    except (binascii.Error, ValueError):
        raw = b""
    if not raw:
        text = code.strip()
        shown = text if len(text) <= 120 else text[:117] + "..."
        return f"Python source {shown!r}"
    names: list[str] = []
    for match in _IDENTIFIER.finditer(raw):
        name = match.group().decode("ascii")
        if name not in names:
            names.append(name)
    size = len(code) * 3 // 4  # approximate: whitespace and padding are not subtracted
    listed = ", ".join(names[:12]) or "none"
    return f"marshalled bytecode (~{size} bytes, starts {raw[:8].hex()}; names: {listed})"
