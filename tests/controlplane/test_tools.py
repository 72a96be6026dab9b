"""The built tools work against the control plane: versions match, helm installs a chart."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import yaml

from tests.controlplane.cluster import BUILD_SCRIPT, REPO, ControlPlane

GO_MODULES = Path(__file__).parent / "go"


def pinned_version(module_dir: str, module: str) -> str:
    for line in (GO_MODULES / module_dir / "go.mod").read_text().splitlines():
        fields = line.split()
        if fields[:1] == [module]:
            return fields[1]
    raise AssertionError(f"{module} not required in {module_dir}/go.mod")


def test_server_and_kubectl_report_the_pinned_kubernetes_release(
    control_plane: ControlPlane,
) -> None:
    versions = json.loads(control_plane.kubectl("version", "-o", "json").stdout)
    pinned = pinned_version("kubernetes", "k8s.io/kubernetes")

    assert versions["serverVersion"]["gitVersion"] == pinned
    assert versions["clientVersion"]["gitVersion"] == pinned


def test_a_second_build_is_a_no_op(control_plane: ControlPlane) -> None:
    again = subprocess.run(
        [str(BUILD_SCRIPT)], capture_output=True, text=True, timeout=60, check=True, cwd=REPO
    )

    assert "controlplane: cached:" in again.stderr
    assert Path(again.stdout.strip()) == control_plane.binaries.kube_apiserver.parent


def test_helm_installs_and_uninstalls_a_chart(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    chart = tmp_path / "probe"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text(
        yaml.safe_dump({"apiVersion": "v2", "name": "probe", "version": "0.1.0"})
    )
    (chart / "values.yaml").write_text(yaml.safe_dump({"greeting": "hello"}))
    (chart / "templates" / "configmap.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-probe\n"
        "data:\n  greeting: {{ .Values.greeting | quote }}\n"
    )

    def helm(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(control_plane.binaries.helm), f"--kubeconfig={control_plane.admin_kubeconfig}",
             "--namespace", namespace, *args],
            capture_output=True, text=True, timeout=120, check=False,
            env={**os.environ, "HOME": str(tmp_path), "HELM_CACHE_HOME": str(tmp_path / "cache"),
                 "HELM_CONFIG_HOME": str(tmp_path / "config"),
                 "HELM_DATA_HOME": str(tmp_path / "data")},
        )  # fmt: skip

    installed = helm("install", "smoke", str(chart), "--set", "greeting=hi", "--wait")
    assert installed.returncode == 0, installed.stderr
    stored = json.loads(
        control_plane.kubectl(
            "get", "configmap", "smoke-probe", "-n", namespace, "-o", "json"
        ).stdout
    )
    assert stored["data"] == {"greeting": "hi"}

    uninstalled = helm("uninstall", "smoke", "--wait")
    assert uninstalled.returncode == 0, uninstalled.stderr
    gone = control_plane.kubectl(
        "get", "configmap", "smoke-probe", "-n", namespace, "--ignore-not-found", "-o", "name"
    )
    assert gone.stdout.strip() == ""
