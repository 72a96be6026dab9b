"""The allow/deny verdicts on pickle globals."""

from __future__ import annotations

import pytest

from weightgate.scan import pickle_globals as G

NONE: frozenset[str] = frozenset()


@pytest.mark.parametrize(
    "dotted",
    [
        "torch._utils._rebuild_tensor_v2",
        "torch._utils._rebuild_parameter",
        "torch._utils._rebuild_parameter_with_state",
        "torch._tensor._rebuild_from_type_v2",
        "torch.FloatStorage",
        "torch.BFloat16Storage",
        "torch.Size",
        "torch.float32",
        "torch.bfloat16",
        "collections.OrderedDict",
        "numpy.core.multiarray._reconstruct",
        "numpy._core.multiarray._reconstruct",
        "numpy._core.multiarray.scalar",
        "numpy.ndarray",
        "numpy.dtype",
        "_codecs.encode",
        "builtins.set",
        "__builtin__.set",
        "__builtin__.xrange",
        "__builtin__.unicode",
        "copy_reg._reconstructor",
        "copyreg._reconstructor",
        "joblib.numpy_pickle.NumpyArrayWrapper",
    ],
)
def test_allowed(dotted: str) -> None:
    module, _, name = dotted.rpartition(".")
    assert G.judge(module, name, NONE) == (G.Verdict.ALLOWED, "")


@pytest.mark.parametrize(
    ("module", "name", "entry"),
    [
        ("posix", "system", "posix"),
        ("nt", "spawnv", "nt"),
        ("ntpath", "join", "ntpath"),
        ("os.path", "exists", "os"),
        ("subprocess", "run", "subprocess"),
        ("commands", "getoutput", "commands"),
        ("__builtin__", "apply", "builtins"),
        ("builtins", "getattr", "builtins"),
        ("builtins", "object.__subclasses__", "attribute __subclasses__"),
        ("builtins", "set.union", "builtins"),
        ("__builtins__", "eval", "__builtins__"),
        ("__builtin__", "reduce", "functools"),
        ("operator", "attrgetter", "operator"),
        ("functools", "partial", "functools"),
        ("pkgutil", "resolve_name", "pkgutil"),
        ("pydoc", "locate", "pydoc"),
        ("importlib.machinery", "SourceFileLoader", "importlib"),
        ("_frozen_importlib", "BuiltinImporter", "_frozen_importlib"),
        ("pip._vendor.distlib.scripts", "ScriptMaker", "pip"),
        ("runpy", "run_path", "runpy"),
        ("torch.load", "x", "torch.load"),
        ("torch", "load", "torch.load"),
        ("torch.hub", "load", "torch.hub"),
        ("numpy.f2py.crackfortran", "getlincoef", "numpy.f2py"),
        ("dill._dill", "_create_code", "dill"),
        ("types", "CodeType", "types"),
        ("joblib", "load", "joblib"),
        ("codecs", "decode", "codecs.decode"),
        ("webbrowser", "open", "webbrowser"),
        ("sklearn.utils", "os.system", "os"),
        ("mymodule", "f.__globals__", "attribute __globals__"),
        ("mymodule", ".".join(["a"] * 40), "a dotted path of more than 32 parts"),
    ],
)
def test_denied(module: str, name: str, entry: str) -> None:
    assert G.judge(module, name, NONE) == (G.Verdict.DENIED, entry)


def test_unlisted() -> None:
    assert G.judge("sklearn.tree._classes", "DecisionTreeClassifier", NONE)[0] is (
        G.Verdict.UNLISTED
    )
    assert G.judge("builtins", "print", NONE) == (G.Verdict.DENIED, "builtins")
    assert G.judge("builtins", "map", NONE)[0] is G.Verdict.UNLISTED  # fickling's safe list
    assert G.judge("io", "BytesIO", NONE)[0] is G.Verdict.UNLISTED


def test_policy_patterns() -> None:
    allowed = frozenset({"sklearn.*", "xgboost.core.Booster"})
    assert G.judge("sklearn.tree._classes", "DecisionTreeClassifier", allowed)[0] is (
        G.Verdict.ALLOWED
    )
    assert G.judge("sklearn", "Pipeline", allowed)[0] is G.Verdict.ALLOWED
    assert G.judge("sklearnx", "Evil", allowed)[0] is G.Verdict.UNLISTED
    assert G.judge("xgboost.core", "Booster", allowed)[0] is G.Verdict.ALLOWED
    assert G.judge("xgboost.core", "DMatrix", allowed)[0] is G.Verdict.UNLISTED
    everything = frozenset({"os.*", "posix.*", "builtins.*", "sklearn.*"})
    assert G.judge("posix", "system", everything)[0] is G.Verdict.DENIED
    assert G.judge("builtins", "eval", everything)[0] is G.Verdict.DENIED
    assert G.judge("sklearn.utils", "os.system", everything)[0] is G.Verdict.DENIED


def test_deny_list_covers_the_picklescan_list() -> None:
    from picklescan import scanner

    for module, names in scanner._unsafe_globals.items():
        samples = ["anything"] if names == "*" else sorted(names)
        for name in samples if not isinstance(names, str) or names == "*" else [names]:
            verdict, _ = G.judge(module, name, NONE)
            assert verdict is G.Verdict.DENIED, (module, name)


def test_deny_list_covers_fickling_module_list() -> None:
    from fickling.fickle import UNSAFE_IMPORTS

    for module in sorted(UNSAFE_IMPORTS):
        if module in {"compile", "exec", "eval"}:  # builtin names listed as modules
            continue
        name = "eval" if module in {"builtins", "__builtin__", "__builtins__"} else "anything"
        assert G.judge(module, name, NONE)[0] is G.Verdict.DENIED, module
