"""Pickle findings: exact rules, severities, offsets and evidence for each technique."""

from __future__ import annotations

import base64
import pickle
import pickletools
from pathlib import Path

import numpy as np
import pytest

from tests.builders import pickles as P
from tests.builders import torch_checkpoint
from weightgate.scan.settings import Limits


def first_global_offset(data: bytes) -> int:
    names = ("GLOBAL", "STACK_GLOBAL", "INST")
    return next(pos for op, _, pos in pickletools.genops(data) if op.name in names)


@pytest.mark.parametrize("protocol", range(6))
def test_same_payload_in_every_protocol_is_critical(protocol: int) -> None:
    data = P.system_call_all_protocols()[protocol]
    found = P.findings(data)
    assert P.summary(found) == [
        ("pickle.dangerous-global", "critical", first_global_offset(data), "posix.system")
    ]
    assert "and calls it" in found[0].message


@pytest.mark.parametrize(
    ("module", "name", "entry"),
    [
        ("posix", "system", "posix"),
        ("nt", "system", "nt"),
        ("os", "system", "os"),
        ("os.path", "join", "os"),
        ("subprocess", "Popen", "subprocess"),
        ("builtins", "getattr", "builtins"),
        ("__builtin__", "eval", "builtins"),
        ("builtins", "__import__", "attribute __import__"),
        ("pkgutil", "resolve_name", "pkgutil"),
        ("pydoc", "locate", "pydoc"),
        ("operator", "methodcaller", "operator"),
        ("_operator", "attrgetter", "_operator"),
        ("importlib", "import_module", "importlib"),
        ("importlib.util", "spec_from_file_location", "importlib"),
        ("runpy", "_run_code", "runpy"),
        ("pip", "main", "pip"),
        ("pip._internal.cli.main", "main", "pip"),
        ("torch.serialization", "load", "torch.serialization.load"),
        ("torch.storage", "_load_from_bytes", "torch.storage._load_from_bytes"),
        ("_io", "FileIO", "_io.FileIO"),
        ("sklearn.utils", "os.system", "os"),
        ("torch", "__builtins__.get", "attribute __builtins__"),
    ],
)
def test_known_dangerous_globals(module: str, name: str, entry: str) -> None:
    data = P.system_call_v4(module, name)
    offset = 8 + len(module.encode()) + len(name.encode())
    found = P.findings(data)
    assert P.summary(found) == [("pickle.dangerous-global", "critical", offset, f"{module}.{name}")]
    assert found[0].message.endswith(f"deny-list entry: {entry}")


def test_unlisted_global_is_high_and_policy_can_allow_it() -> None:
    data = P.system_call_v4("sklearn.linear_model._logistic", "LogisticRegression")
    assert P.summary(P.findings(data)) == [
        (
            "pickle.unlisted-global",
            "high",
            56,
            "sklearn.linear_model._logistic.LogisticRegression",
        )
    ]
    assert P.findings(data, allowed_globals=frozenset({"sklearn.*"})) == []
    exact = frozenset({"sklearn.linear_model._logistic.LogisticRegression"})
    assert P.findings(data, allowed_globals=exact) == []
    other = frozenset({"sklearn.linear_model._logistic.Other"})
    assert len(P.findings(data, allowed_globals=other)) == 1


def test_policy_allowlist_never_allows_a_dangerous_global() -> None:
    allow_all = frozenset({"posix.*", "os.*", "posix.system", "sklearn.*"})
    for data in (P.system_call_v4(), P.system_call_v4("sklearn.utils", "os.system")):
        assert [f.rule for f in P.findings(data, allowed_globals=allow_all)] == [
            "pickle.dangerous-global"
        ]


def test_torch_state_dict_passes() -> None:
    shapes = {"layer.weight": (4, 3), "layer.bias": (4,)}
    obj, _ = torch_checkpoint.state_dict(shapes)
    assert P.findings(torch_checkpoint.dumps(obj)) == []


def test_torch_zip_checkpoint_passes() -> None:
    assert [f for f in P.findings(torch_checkpoint.build_checkpoint(), "model.pt")] == []


def test_dynamic_global_is_critical() -> None:
    found = P.summary(P.findings(P.dynamic_getattr_global()))
    assert found == [
        ("pickle.dangerous-global", "critical", 6, "builtins.getattr"),
        ("pickle.dynamic-global", "critical", 57, "os.<computed>"),
    ]


def test_unresolved_and_resolved_extension_codes() -> None:
    import copyreg

    assert P.summary(P.findings(P.ext_call(0x1234))) == [
        ("pickle.unresolved-extension", "high", 2, "extension code 4660")
    ]
    copyreg.add_extension("posix", "system", 0x1234)
    try:
        found = P.findings(P.ext_call(0x1234))
    finally:
        copyreg.remove_extension("posix", "system", 0x1234)
    assert P.summary(found) == [("pickle.dangerous-global", "critical", 2, "posix.system")]
    assert found[0].message.startswith("EXT2 at offset 0x2 imports `posix.system`")


def test_inst_obj_and_newobj_payloads() -> None:
    inst = P.MARK + b"S'echo'\n" + P.inst("os", "system") + P.STOP
    assert P.summary(P.findings(inst)) == [("pickle.dangerous-global", "critical", 9, "os.system")]
    obj = P.MARK + P.global_op("subprocess", "Popen") + P.short_str("id") + P.OBJ + P.STOP
    assert P.summary(P.findings(obj)) == [
        ("pickle.dangerous-global", "critical", 1, "subprocess.Popen")
    ]
    newobj = P.proto(2) + P.global_op("subprocess", "Popen") + P.EMPTY_TUPLE + P.NEWOBJ + P.STOP
    assert P.summary(P.findings(newobj)) == [
        ("pickle.dangerous-global", "critical", 2, "subprocess.Popen")
    ]
    newobj_ex = newobj[:-2] + P.EMPTY_DICT + P.NEWOBJ_EX + P.STOP
    assert P.summary(P.findings(newobj_ex))[0][:3] == ("pickle.dangerous-global", "critical", 2)


class Stateful:
    """A class whose __setstate__ would run when BUILD applies its state."""

    def __setstate__(self, state: object) -> None:
        raise AssertionError("never loaded")


def test_build_with_setstate_target_is_reported_by_its_class() -> None:
    data = pickle.dumps(Stateful(), protocol=2)
    found = P.findings(data)
    assert P.summary(found) == [
        ("pickle.unlisted-global", "high", 2, f"{__name__}.Stateful"),
    ]
    assert "and calls it" in found[0].message


def test_build_on_an_imported_module_is_critical() -> None:
    # The sys_module_override trick: rewrite an allowed module's attributes, then import.
    data = (
        P.proto(4)
        + P.short_str("torch")
        + P.short_str("_utils")
        + P.STACK_GLOBAL
        + P.EMPTY_DICT
        + P.short_str("_rebuild_tensor")
        + P.short_str("eval")
        + P.SETITEM
        + P.BUILD
        + P.STOP
    )
    assert P.summary(P.findings(data)) == [
        ("pickle.unlisted-global", "high", 17, "torch._utils"),
        ("pickle.global-mutation", "critical", 43, "torch._utils"),
    ]


def test_copyreg_reconstructor_is_judged_by_its_class() -> None:
    # Protocol 0 writes copy_reg._reconstructor(cls, object, None): the reconstructor and
    # object are allowed, the class is a global of its own and is judged as one.
    data = pickle.dumps(Stateful(), protocol=0)
    assert data.startswith(b"ccopy_reg\n_reconstructor\n")
    assert P.summary(P.findings(data)) == [
        ("pickle.unlisted-global", "high", data.index(b"ctests"), f"{__name__}.Stateful")
    ]


def test_stacked_pickles_benign_then_malicious() -> None:
    benign = pickle.dumps({"weights": [0.5, 1.5]}, protocol=4)
    found = P.findings(benign + P.system_call_v4())
    assert P.summary(found) == [
        ("pickle.dangerous-global", "critical", len(benign) + 19, "posix.system")
    ]


def test_legacy_torch_file_passes_and_its_data_is_ignored() -> None:
    obj, _ = torch_checkpoint.state_dict({"w": (2,)})
    assert P.findings(P.legacy_torch(torch_checkpoint.dumps(obj)), "model.bin") == []


def test_legacy_torch_with_a_malicious_object() -> None:
    data = P.legacy_torch(P.system_call_all_protocols()[2])
    found = P.findings(data, "model.bin")
    assert [(f.rule, f.evidence) for f in found] == [("pickle.dangerous-global", "posix.system")]


def test_magic_number_by_eval_is_still_flagged() -> None:
    magic = (
        P.proto(2)
        + P.global_op("__builtin__", "eval")
        + P.binunicode(hex(0x1950A86A20F9469CFC6C))
        + P.TUPLE1
        + P.REDUCE
        + P.STOP
    )
    found = P.findings(magic + pickle.dumps(1001, protocol=2), "model.pt")
    assert P.summary(found) == [("pickle.dangerous-global", "critical", 2, "__builtin__.eval")]


def test_truncated_pickle_reports_its_globals_and_fails_closed() -> None:
    data = b"cbuiltins\nexec\n(X>\x00\x00\x00f = open('x', 'a')"
    assert P.summary(P.findings(data)) == [
        ("pickle.dangerous-global", "critical", 0, "builtins.exec"),
        ("pickle.malformed", "medium", 16, None),
    ]


def test_ten_million_opcodes_is_a_limit_finding() -> None:
    found = P.findings(P.many_opcodes(10_000_000))
    assert P.summary(found) == [("pickle.limit-exceeded", "medium", 5_000_001, None)]
    assert "limits.max_pickle_opcodes" in found[0].message


def test_huge_declared_length() -> None:
    found = P.findings(P.huge_binbytes8())
    assert P.summary(found) == [("pickle.malformed", "medium", 2, None)]
    assert f"declares {2**63} bytes" in found[0].message


def test_trailing_bytes_are_low() -> None:
    data = pickle.dumps([1, 2], protocol=4) + b"\x00\x01junk"
    assert P.summary(P.findings(data)) == [("pickle.trailing-data", "low", len(data) - 6, None)]


@pytest.mark.parametrize("form", ["raw", "hex", "base64"])
def test_embedded_pickle_is_reported_and_scanned(form: str) -> None:
    inner = P.system_call_v4()
    value: object = {
        "raw": inner,
        "hex": inner.hex(),
        "base64": base64.b64encode(inner).decode(),
    }[form]
    outer = pickle.dumps({"config": value}, protocol=4)
    op_offset = outer.index(b"config") + 6 + 1  # MEMOIZE after the key, then the value
    found = P.findings(outer)
    assert P.summary(found) == [
        ("pickle.embedded-pickle", "medium", op_offset, f"{form} pickle in a "
         f"{'bytes' if form == 'raw' else 'str'} constant"),
        ("pickle.dangerous-global", "critical", 19, "posix.system"),
    ]  # fmt: skip
    assert found[1].path == f"model.pkl!embedded-pickle@{op_offset:#x}"


def test_benign_embedded_pickle_is_still_medium() -> None:
    outer = pickle.dumps({"inner": pickle.dumps({"a": 1}, protocol=4)}, protocol=4)
    assert [f.rule for f in P.findings(outer)] == ["pickle.embedded-pickle"]


def test_embedded_pickles_nest_to_the_limit() -> None:
    data = P.system_call_v4()
    for _ in range(3):
        data = pickle.dumps({"next": data}, protocol=4)
    found = P.findings(data)
    assert [f.rule for f in found] == ["pickle.embedded-pickle"] * 3 + ["pickle.dangerous-global"]
    shallow = P.findings(data, limits=Limits(max_nested_pickle_depth=1))
    assert [f.rule for f in shallow] == [
        "pickle.embedded-pickle",
        "pickle.embedded-pickle",
        "pickle.limit-exceeded",
    ]


def test_dill_function_is_critical() -> None:
    import dill

    data = dill.dumps(lambda x: x + 1)
    found = P.findings(data, "model.dill")
    evidence = {f.evidence for f in found if f.rule == "pickle.dangerous-global"}
    assert "dill._dill._create_function" in evidence
    assert "dill._dill._create_code" in evidence


def test_joblib_dump_of_arrays_passes() -> None:
    value = {
        "coef": np.linspace(0, 1, 1000).reshape(10, 100),
        "labels": np.array(["cat", "dog"]),
        "objects": np.array([1, "two", None], dtype=object),
        "count": np.int64(3),
    }
    assert P.findings(P.joblib_dump(value), "model.joblib") == []


def test_joblib_object_array_with_a_payload_is_caught() -> None:
    data = P.joblib_dump({"x": np.array([P.SystemCall()], dtype=object)})
    found = P.findings(data, "model.joblib")
    assert [(f.rule, f.evidence) for f in found] == [("pickle.dangerous-global", "posix.system")]
    assert found[0].offset == data.index(b"system") + len("system") + 1  # STACK_GLOBAL
    assert "imports in all" not in found[0].message


def test_text_files_are_handed_back() -> None:
    for text in (b"MIT License\n\nPermission is hereby granted", b"(c) 2024\n", b"cats\n"):
        found = P.findings(text, "LICENSE")
        assert all(not f.rule.startswith("pickle.") for f in found), found


def test_binary_that_only_looks_like_a_pickle_start_is_unrecognized() -> None:
    assert P.summary(P.findings(b"cmod\n\xf8\n", "weights.bin")) == [
        ("format.unrecognized", "info", None, None)
    ]


def test_long_names_are_clipped_in_findings() -> None:
    name = "a" * 5000
    data = P.proto(4) + P.binunicode(name) + P.short_str("b") + P.STACK_GLOBAL + P.STOP
    (finding,) = P.findings(data)
    assert finding.rule == "pickle.unlisted-global"
    assert finding.evidence is not None and len(finding.evidence) < 300
    assert finding.evidence.endswith("(5002 characters)")


def test_files_on_disk_release_their_mapping(tmp_path: Path) -> None:
    import weightgate

    inner = P.system_call_v4()
    data = pickle.dumps({"a": inner, "b": base64.b64encode(inner).decode()}, protocol=4)
    path = tmp_path / "model.pkl"
    path.write_bytes(data)
    report = weightgate.scan_path(path)
    assert report.errors == []
    assert [f.rule for f in report.findings] == [
        "pickle.embedded-pickle",
        "pickle.dangerous-global",
        "pickle.embedded-pickle",
        "pickle.dangerous-global",
    ]
