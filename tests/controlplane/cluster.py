"""A real control plane for the tests: etcd and kube-apiserver on loopback.

The binaries come from `scripts/controlplane` (built from their Go modules, cached by version).
The flags follow controller-runtime's envtest: RBAC authorization, client certificates from a
client CA, service-account tokens signed with a P-256 key, and no controllers -- objects are
stored and validated (schemas, admission webhooks) but nothing reconciles them, so no Pod ever
runs. The ServiceAccount admission plugin is off because no controller creates the `default`
ServiceAccount it would require.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.controlplane.pki import (
    CertificateAuthority,
    new_private_key,
    private_key_pem,
    public_key_pem,
)
from tests.controlplane.processes import ServerProcess, free_port

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "scripts" / "controlplane"

ADMIN_USER = "weightgate-test-admin"
DEVELOPER_USER = "weightgate-test-developer"
DEVELOPER_GROUP = "weightgate-test:developers"
KUBECTL_TIMEOUT = 120.0


class ControlPlaneBuildFailed(RuntimeError):
    """`scripts/controlplane` failed; the message carries its output."""


@dataclass(frozen=True)
class Binaries:
    kube_apiserver: Path
    etcd: Path
    kubectl: Path
    helm: Path
    registry: Path  # the OCI distribution registry, for the source tests

    @classmethod
    def build(cls) -> Binaries:
        """Run `scripts/controlplane` (a no-op when cached) and return what it built."""
        result = subprocess.run(
            [str(BUILD_SCRIPT)], capture_output=True, text=True, check=False, cwd=REPO
        )
        if result.returncode != 0:
            raise ControlPlaneBuildFailed(
                f"{BUILD_SCRIPT} exited with {result.returncode}:\n{result.stderr}{result.stdout}"
            )
        bin_dir = Path(result.stdout.strip().splitlines()[-1])
        return cls(
            kube_apiserver=bin_dir / "kube-apiserver",
            etcd=bin_dir / "etcd",
            kubectl=bin_dir / "kubectl",
            helm=bin_dir / "helm",
            registry=bin_dir / "registry",
        )


class ControlPlane:
    """etcd + kube-apiserver in `workdir`, with an admin and a non-admin kubeconfig."""

    def __init__(self, binaries: Binaries, workdir: Path) -> None:
        self.binaries = binaries
        self.workdir = workdir
        self.pki_dir = workdir / "pki"
        self.logs_dir = workdir / "logs"
        self.apiserver_port = free_port()
        self.server = f"https://127.0.0.1:{self.apiserver_port}"
        self.admin_kubeconfig = workdir / "admin.kubeconfig"
        self.developer_kubeconfig = workdir / "developer.kubeconfig"
        self.serving_ca = workdir / "pki" / "serving-ca.crt"
        self._etcd_port = free_port()
        self._etcd: ServerProcess | None = None
        self._apiserver: ServerProcess | None = None
        self._admin_tls: ssl.SSLContext | None = None

    @property
    def log_files(self) -> list[Path]:
        return sorted(self.logs_dir.glob("*.log"))

    def start(self, timeout: float = 120.0) -> None:
        self.pki_dir.mkdir(parents=True)
        self.logs_dir.mkdir()
        self._write_pki()
        self._start_etcd(timeout)
        self._start_apiserver(timeout)

    def stop(self) -> None:
        for server in (self._apiserver, self._etcd):
            if server is not None:
                server.stop()

    def kubectl(
        self,
        *args: str,
        kubeconfig: Path | None = None,
        input: str | None = None,
        check: bool = True,
    ) -> subprocess.CompletedProcess[str]:
        """Run the built kubectl against this control plane (admin unless told otherwise)."""
        argv = [str(self.binaries.kubectl), f"--kubeconfig={kubeconfig or self.admin_kubeconfig}"]
        argv += [f"--cache-dir={self.workdir / 'kube-cache'}", *args]
        result = subprocess.run(
            argv,
            input=input,
            capture_output=True,
            text=True,
            timeout=KUBECTL_TIMEOUT,
            check=False,
            env={**os.environ, "HOME": str(self.workdir)},
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"kubectl {' '.join(args)} exited with {result.returncode}:\n"
                f"{result.stderr}{result.stdout}"
            )
        return result

    def install_crds(self, crds: Sequence[dict[str, Any]]) -> None:
        """Server-side apply (the CRDs exceed client-side apply's annotation limit), then wait
        until every CRD is Established so its objects can be created at once."""
        manifest = json.dumps({"apiVersion": "v1", "kind": "List", "items": list(crds)})
        self.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=manifest)
        self.kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=120s")

    # --- setup -------------------------------------------------------------------------

    def _write_pki(self) -> None:
        serving_ca = CertificateAuthority("weightgate-test-serving-ca")
        client_ca = CertificateAuthority("weightgate-test-client-ca")
        self.serving_ca.write_bytes(serving_ca.cert_pem)
        (self.pki_dir / "client-ca.crt").write_bytes(client_ca.cert_pem)
        serving_ca.issue_server(
            "kube-apiserver", ["127.0.0.1", "localhost", "kubernetes.default.svc"]
        ).write(self.pki_dir, "apiserver")
        signing_key = new_private_key()
        service_account_key = self.pki_dir / "service-account.key"
        service_account_key.touch(mode=0o600)
        service_account_key.write_bytes(private_key_pem(signing_key))
        (self.pki_dir / "service-account.pub").write_bytes(public_key_pem(signing_key))

        admin = client_ca.issue_client(ADMIN_USER, ["system:masters"])
        developer = client_ca.issue_client(DEVELOPER_USER, [DEVELOPER_GROUP])
        self._write_kubeconfig(self.admin_kubeconfig, ADMIN_USER, admin.cert_pem, admin.key_pem)
        self._write_kubeconfig(
            self.developer_kubeconfig, DEVELOPER_USER, developer.cert_pem, developer.key_pem
        )
        self._admin_tls = ssl.create_default_context(cafile=self.serving_ca)
        admin.write(self.pki_dir, "admin")
        self._admin_tls.load_cert_chain(self.pki_dir / "admin.crt", self.pki_dir / "admin.key")

    def _write_kubeconfig(self, path: Path, user: str, cert_pem: bytes, key_pem: bytes) -> None:
        def b64(data: bytes) -> str:
            return base64.b64encode(data).decode()

        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "weightgate-test",
                    "cluster": {
                        "server": self.server,
                        "certificate-authority-data": b64(self.serving_ca.read_bytes()),
                    },
                }
            ],
            "users": [
                {
                    "name": user,
                    "user": {
                        "client-certificate-data": b64(cert_pem),
                        "client-key-data": b64(key_pem),
                    },
                }
            ],
            "contexts": [{"name": user, "context": {"cluster": "weightgate-test", "user": user}}],
            "current-context": user,
        }
        path.touch(mode=0o600)
        path.write_text(yaml.safe_dump(config))

    def _start_etcd(self, timeout: float) -> None:
        client_url = f"http://127.0.0.1:{self._etcd_port}"
        peer_url = f"http://127.0.0.1:{free_port()}"
        self._etcd = ServerProcess(
            "etcd",
            [
                self.binaries.etcd,
                "--name=weightgate-test",
                f"--data-dir={self.workdir / 'etcd'}",
                f"--listen-client-urls={client_url}",
                f"--advertise-client-urls={client_url}",
                f"--listen-peer-urls={peer_url}",
                f"--initial-advertise-peer-urls={peer_url}",
                f"--initial-cluster=weightgate-test={peer_url}",
                "--unsafe-no-fsync=true",
                "--log-level=warn",
            ],
            self.logs_dir / "etcd.log",
        )
        self._etcd.start()
        self._etcd.wait_ready(lambda: _etcd_healthy(client_url), timeout)

    def _start_apiserver(self, timeout: float) -> None:
        pki = self.pki_dir
        self._apiserver = ServerProcess(
            "kube-apiserver",
            [
                self.binaries.kube_apiserver,
                f"--etcd-servers=http://127.0.0.1:{self._etcd_port}",
                "--bind-address=127.0.0.1",
                "--advertise-address=127.0.0.1",
                # the endpoint reconciler refuses loopback addresses, and nothing in the tests
                # reaches the API through the `kubernetes` Service
                "--endpoint-reconciler-type=none",
                f"--secure-port={self.apiserver_port}",
                f"--cert-dir={self.workdir / 'apiserver-certs'}",
                f"--tls-cert-file={pki / 'apiserver.crt'}",
                f"--tls-private-key-file={pki / 'apiserver.key'}",
                f"--client-ca-file={pki / 'client-ca.crt'}",
                "--authorization-mode=RBAC",
                "--enable-admission-plugins=ValidatingAdmissionWebhook",
                "--disable-admission-plugins=ServiceAccount",
                "--service-cluster-ip-range=10.0.0.0/24",
                "--allow-privileged=true",
                "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
                f"--service-account-key-file={pki / 'service-account.pub'}",
                f"--service-account-signing-key-file={pki / 'service-account.key'}",
                "--profiling=false",
                "--v=1",
            ],
            self.logs_dir / "kube-apiserver.log",
        )
        self._apiserver.start()
        self._apiserver.wait_ready(self._apiserver_ready, timeout)

    def _apiserver_ready(self) -> bool:
        try:
            with urllib.request.urlopen(
                f"{self.server}/readyz", context=self._admin_tls, timeout=5
            ) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False


def _etcd_healthy(client_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{client_url}/health", timeout=5) as response:
            return bool(json.load(response).get("health") == "true")
    except (urllib.error.URLError, OSError, ValueError):
        return False
