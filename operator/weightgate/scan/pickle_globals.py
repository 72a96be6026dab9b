"""Which pickle globals are allowed, which are known to be dangerous, and the verdict.

Default deny: a global is allowed only when it is on :data:`ALLOWED_GLOBALS` (what
PyTorch, NumPy, joblib and the containers of ``collections`` need to rebuild tensors,
arrays and state dicts) or on the policy's ``allowed_globals``. Everything else is a
finding; the globals on the deny-list are critical, and the deny-list always wins, even
over a policy's allowlist.

The deny-list is the union of what four scanners flag, as of these versions:

* picklescan 1.0.5, ``picklescan/scanner.py`` ``_unsafe_globals``;
* fickling 0.1.12, ``fickling/fickle.py`` ``UNSAFE_IMPORTS`` (module level, with
  ``SAFE_BUILTINS`` as the only exception inside ``builtins``) and
  ``fickling/analysis.py`` ``UnsafeImportsML``;
* modelscan (protectai/modelscan ``modelscan/settings.py``, ``unsafe_globals``);
* ModelAudit (promptfoo/modelaudit ``modelaudit/detectors/suspicious_symbols.py``
  ``SUSPICIOUS_GLOBALS`` and ``modelaudit/scanners/pickle_scanner.py``
  ``ALWAYS_DANGEROUS_FUNCTIONS``/``ALWAYS_DANGEROUS_MODULES``).

Two deliberate exceptions to that union, both in :data:`DENY_EXCEPTIONS`: fickling and
ModelAudit block the whole ``joblib`` module, which would make every ``joblib.dump`` of a
NumPy array critical, so the two array wrapper classes joblib itself writes are exempt.
"""

from __future__ import annotations

import _compat_pickle
import enum
from collections.abc import Iterable

# Modules denied with everything in them and below them ("os" covers "os.path.join").
DENIED_MODULES: frozenset[str] = frozenset(
    {
        # process, shell and OS access
        "os", "posix", "nt", "posixpath", "ntpath", "subprocess", "_posixsubprocess",
        "_winapi", "pty", "commands", "popen2", "sys", "multiprocessing", "signal",
        "_signal", "threading", "_thread", "atexit", "platform", "resource", "pexpect",
        "_osx_support", "_aix_support", "_pyrepl",
        # code execution, compilation, import machinery
        "builtins", "__builtin__", "__builtins__", "code", "codeop", "runpy", "marshal",
        "types", "compileall", "py_compile", "importlib", "_frozen_importlib",
        "_frozen_importlib_external", "_imp", "imp", "zipimport", "pkgutil", "site",
        "inspect", "gc",
        "ctypes", "_ctypes", "cffi", "doctest", "unittest", "test", "idlelib", "lib2to3",
        "distutils", "setuptools", "pip", "ensurepip", "venv", "pkg_resources",
        # debuggers and profilers that exec strings
        "pdb", "bdb", "cProfile", "profile", "timeit", "trace", "tracemalloc",
        # the operator/functools bypasses
        "operator", "_operator", "functools", "_functools",
        # nested deserialisers
        "pickle", "_pickle", "cPickle", "dill", "cloudpickle", "joblib",
        "shelve", "pickletools",
        # file system
        "shutil", "tempfile", "filecmp", "fileinput", "glob", "linecache", "difflib",
        "mmap", "tarfile", "zipfile", "sqlite3", "_sqlite3", "dbm", "pydoc",
        # network and exfiltration
        "socket", "_socket", "ssl", "_ssl", "http", "httplib", "urllib", "urllib2",
        "urllib3", "requests", "aiohttp", "asyncio", "webbrowser", "smtplib", "imaplib",
        "ftplib", "poplib", "telnetlib", "nntplib", "socketserver", "xmlrpc", "select",
        "selectors", "uuid",
        # logging handlers open files and sockets
        "logging", "syslog",
        # ML libraries' code paths that compile, load or fetch
        "torch.hub", "torch.jit", "torch._dynamo", "torch._inductor", "torch.compile",
        "torch.distributed.rpc", "torch.utils.bottleneck", "numpy.f2py",
        "numpy.distutils", "numpy.testing._private.utils",
    }
)  # fmt: skip

# Single names denied (and anything reached through them, "a.b" covers "a.b.c").
DENIED_NAMES: frozenset[str] = frozenset(
    {
        "io.open", "io.FileIO", "io.open_code", "_io.open", "_io.FileIO", "_pyio.open",
        "_pyio.FileIO", "codecs.open", "codecs.decode", "codecs.encode",
        "base64.b64decode", "base64.b64encode", "base64.decode",
        "concurrent.futures.ProcessPoolExecutor", "concurrent.futures.ThreadPoolExecutor",
        "torch.load", "torch.save", "torch.compile", "torch.serialization.load",
        "torch.storage._load_from_bytes", "torch.utils._config_module.ConfigModule",
        "torch.utils.collect_env.run",
        "torch.utils.data.datapipes.utils.decoder.basichandlers",
        "torch.distributed.elastic.rendezvous.api.basichandlers",
        "torch._dynamo.guards.GuardBuilder",
        "torch.fx.experimental.symbolic_shapes.ShapeEnv.evaluate_guards_expression",
        "torch.jit.unsupported_tensor_ops.execWrapper", "numpy.load", "numpy.save",
        "numpy.ctypeslib", "numpy.lib.format.read_array", "pandas.read_pickle",
        "scipy.io.loadmat", "tensorflow.io", "keras.models.load_model",
    }
)  # fmt: skip

# The builtins that fickling's SAFE_BUILTINS exempts (pure functions and data types) and
# no other source flags. Every other name in builtins is denied.
SAFE_BUILTINS: frozenset[str] = frozenset(
    {
        "bool", "int", "float", "complex", "str", "bytes", "bytearray", "list", "tuple",
        "set", "frozenset", "dict", "len", "abs", "sum", "min", "max", "round", "pow",
        "divmod", "sorted", "reversed", "enumerate", "zip", "range", "map", "filter",
        "slice", "iter", "next", "all", "any", "hash", "id", "repr", "ascii", "bin", "hex",
        "oct", "ord", "chr", "isinstance", "issubclass", "object", "callable", "format",
    }
)  # fmt: skip
_BUILTIN_MODULES = frozenset({"builtins", "__builtin__", "__builtins__"})
_MAX_PATH_PARTS = 32

# Attributes that reach outside the object they are read from: a dotted protocol 4 name
# through one of them can get at any module's globals.
DENIED_ATTRIBUTES: frozenset[str] = frozenset(
    {
        "__globals__", "__builtins__", "__dict__", "__subclasses__", "__import__",
        "__loader__", "__spec__", "__code__", "__closure__", "__getattribute__",
        "__reduce__", "__reduce_ex__", "__setstate__", "__class__", "__base__",
        "__bases__", "__mro__", "__self__", "__func__", "__module__", "__init__",
        "__call__", "__new__", "__getattr__", "f_globals", "gi_frame", "tb_frame",
    }
)  # fmt: skip

DENY_EXCEPTIONS: frozenset[str] = frozenset(
    {"joblib.numpy_pickle.NumpyArrayWrapper", "joblib.numpy_pickle.NDArrayWrapper"}
)

# Private or platform names of denied modules. Python 2 names (__builtin__, copy_reg,
# commands...) come from the standard library's own _compat_pickle tables.
ALIASES: dict[str, str] = {
    "posix": "os", "nt": "os", "posixpath": "os.path", "ntpath": "os.path",
    "_io": "io", "_pyio": "io", "_operator": "operator", "_functools": "functools",
    "_pickle": "pickle", "_posixsubprocess": "subprocess", "_socket": "socket",
    "_ssl": "ssl", "_thread": "threading", "_ctypes": "ctypes", "_sqlite3": "sqlite3",
    "_signal": "signal", "_imp": "importlib", "_frozen_importlib": "importlib",
    "_frozen_importlib_external": "importlib", "__builtins__": "builtins",
}  # fmt: skip

_TORCH_STORAGES = (
    "Double", "Float", "Half", "Long", "Int", "Short", "Char", "Byte", "Bool", "BFloat16",
    "ComplexDouble", "ComplexFloat", "QUInt8", "QInt8", "QInt32", "QUInt4x2", "QUInt2x4",
)  # fmt: skip
_TORCH_TENSORS = (
    "Double", "Float", "Half", "Long", "Int", "Short", "Char", "Byte", "Bool", "BFloat16",
)  # fmt: skip
_TORCH_DTYPES = (
    "float32", "float64", "float16", "bfloat16", "complex32", "complex64", "complex128",
    "uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64", "bool",
    "quint8", "qint8", "qint32", "quint4x2", "quint2x4", "float8_e4m3fn", "float8_e5m2",
    "float8_e4m3fnuz", "float8_e5m2fnuz", "float8_e8m0fnu", "float4_e2m1fn_x2", "half",
    "float", "double", "long", "int", "short", "cfloat", "cdouble",
    "uint1", "uint2", "uint3", "uint4", "uint5", "uint6", "uint7",
    "int1", "int2", "int3", "int4", "int5", "int6", "int7",
    "bits1x8", "bits2x4", "bits4x2", "bits8", "bits16",
    "per_tensor_affine", "per_tensor_symmetric", "per_channel_affine",
    "per_channel_symmetric", "per_channel_affine_float_qparams",
)  # fmt: skip
_NUMPY_SCALARS = (
    "bool_", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "float32", "float64", "longdouble", "complex64", "complex128",
    "clongdouble", "str_", "bytes_", "void", "datetime64", "timedelta64", "intc",
    "uintc", "intp", "uintp", "longlong", "ulonglong", "half", "single", "double",
)  # fmt: skip


def _allowed() -> frozenset[str]:
    names = {
        # PyTorch (the globals torch.load(weights_only=True) accepts, zip and legacy)
        "torch._utils._rebuild_tensor", "torch._utils._rebuild_tensor_v2",
        "torch._utils._rebuild_tensor_v3", "torch._utils._rebuild_parameter",
        "torch._utils._rebuild_parameter_with_state", "torch._utils._rebuild_qtensor",
        "torch._utils._rebuild_sparse_tensor",
        "torch._utils._rebuild_meta_tensor_no_storage",
        "torch._utils._rebuild_wrapper_subclass", "torch._utils._rebuild_nested_tensor",
        "torch._utils._rebuild_device_tensor_from_numpy",
        "torch._utils._rebuild_device_tensor_from_cpu_tensor",
        "torch._tensor._rebuild_from_type_v2", "torch.serialization._get_layout",
        "torch.nn.parameter.Parameter", "torch.nn.parameter.Buffer", "torch.Size",
        "torch.Tensor", "torch.device", "torch.storage.UntypedStorage",
        "torch.storage.TypedStorage", "torch.UntypedStorage", "torch.TypedStorage",
        # containers
        "collections.OrderedDict", "collections.defaultdict", "collections.Counter",
        "collections.deque",
        # protocol 2 bytes and protocol 0/1 object reconstruction (the class argument is
        # a global of its own and is judged on its own)
        "_codecs.encode", "copyreg._reconstructor", "copy_reg._reconstructor",
        "copyreg.__newobj__", "copyreg.__newobj_ex__",
        # builtins that only build data
        "builtins.set", "builtins.frozenset", "builtins.bytearray", "builtins.slice",
        "builtins.complex", "builtins.range", "builtins.object", "builtins.bytes",
        "builtins.int", "builtins.float", "builtins.str", "builtins.list",
        "builtins.tuple", "builtins.dict", "builtins.bool",
        "__builtin__.set", "__builtin__.frozenset", "__builtin__.bytearray",
        "__builtin__.slice", "__builtin__.complex", "__builtin__.object",
        # joblib's array wrappers
        "joblib.numpy_pickle.NumpyArrayWrapper", "joblib.numpy_pickle.NDArrayWrapper",
    }  # fmt: skip
    for kind in _TORCH_STORAGES:
        names.add(f"torch.{kind}Storage")
        names.add(f"torch.cuda.{kind}Storage")
    for kind in _TORCH_TENSORS:
        names.add(f"torch.{kind}Tensor")
        names.add(f"torch.cuda.{kind}Tensor")
    names.update(f"torch.{dtype}" for dtype in _TORCH_DTYPES)
    # NumPy arrays, dtypes and scalars, under both the 1.x and 2.x module paths.
    names.update({"numpy.ndarray", "numpy.dtype", "numpy.ma.core._mareconstruct"})
    for core in ("numpy.core", "numpy._core"):
        names.update(
            {
                f"{core}.multiarray._reconstruct",
                f"{core}.multiarray.scalar",
                f"{core}.numeric._frombuffer",
            }
        )
    names.update(f"numpy.{scalar}" for scalar in _NUMPY_SCALARS)
    names.update(f"numpy.dtypes.{scalar.capitalize()}DType" for scalar in _NUMPY_SCALARS)
    return frozenset(names)


ALLOWED_GLOBALS: frozenset[str] = _allowed()
"""Globals allowed by default, as ``module.name``."""


class Verdict(enum.Enum):
    """How a global is judged."""

    ALLOWED = "allowed"
    DENIED = "denied"
    UNLISTED = "unlisted"


def variants(module: str, name: str) -> list[tuple[str, str]]:
    """The (module, name) pairs a loader may resolve the global as.

    Protocol 0-2 loaders map Python 2 names (``__builtin__``, ``copy_reg``...) through
    ``_compat_pickle``; platform and private modules are aliases of public ones.
    """
    mapped = _compat_pickle.NAME_MAPPING.get((module, name))
    if mapped is None and module in _compat_pickle.IMPORT_MAPPING:
        mapped = (_compat_pickle.IMPORT_MAPPING[module], name)
    # Python 3 has no __builtin__ module: such names only load through the mapping
    # (__builtin__.xrange is builtins.range, __builtin__.reduce is functools.reduce).
    found = [] if module == "__builtin__" and mapped is not None else [(module, name)]
    if mapped is not None:
        found.append(mapped)
    for mod, attr in list(found):
        root, _, rest = mod.partition(".")
        alias = ALIASES.get(root)
        if alias is not None:
            found.append((f"{alias}.{rest}" if rest else alias, attr))
    return found


def denied_entry(module: str, name: str) -> str | None:
    """The deny-list entry a global matches, or None."""
    if f"{module}.{name}" in DENY_EXCEPTIONS:
        return None
    for mod, attr in variants(module, name):
        entry = _denied_path(mod, attr)
        if entry is not None:
            return entry
    return None


def _denied_path(module: str, name: str) -> str | None:
    parts = module.split(".")
    attrs = name.split(".")
    if len(parts) + len(attrs) > _MAX_PATH_PARTS:
        return f"a dotted path of more than {_MAX_PATH_PARTS} parts"
    for part in attrs:
        if part in DENIED_ATTRIBUTES:
            return f"attribute {part}"
    entry = _denied_prefix([*parts, *attrs])
    if entry is not None:
        return entry
    # A dotted attribute name can walk into a module the first one imported
    # ("sklearn.utils" + "os.system"): judge every tail of the attribute path as a root.
    for start in range(len(attrs) - 1):
        entry = _denied_prefix(attrs[start:])
        if entry is not None:
            return entry
    return None


def _denied_prefix(path: list[str]) -> str | None:
    for i in range(1, len(path) + 1):
        prefix = ".".join(path[:i])
        if prefix in DENIED_NAMES:
            return prefix
        if prefix in DENIED_MODULES:
            if prefix in _BUILTIN_MODULES and len(path) == i + 1 and path[i] in SAFE_BUILTINS:
                return None
            return prefix
    return None


def matches(patterns: Iterable[str], dotted: str) -> bool:
    """Whether ``dotted`` is on a list of ``module.name`` / ``module.*`` patterns."""
    for pattern in patterns:
        if pattern.endswith(".*"):
            prefix = pattern[:-2]
            if dotted.startswith(prefix + "."):
                return True
        elif pattern == dotted:
            return True
    return False


def judge(module: str, name: str, extra_allowed: frozenset[str]) -> tuple[Verdict, str]:
    """Judge one global.

    Returns:
        The verdict and, for denied globals, the deny-list entry that matched.
    """
    entry = denied_entry(module, name)
    if entry is not None:
        return Verdict.DENIED, entry
    # Allowed only if every way a loader may resolve the name is allowed: protocols 0-2
    # map Python 2 names, protocols 3+ import the name as written.
    for mod, attr in variants(module, name):
        dotted = f"{mod}.{attr}"
        if dotted not in ALLOWED_GLOBALS and not (extra_allowed and matches(extra_allowed, dotted)):
            return Verdict.UNLISTED, ""
    return Verdict.ALLOWED, ""
