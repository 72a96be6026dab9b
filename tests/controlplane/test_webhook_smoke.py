"""A real kube-apiserver calls a TLS webhook: denials reach kubectl, dry-run is flagged, the
caBundle and failurePolicy are enforced, and RBAC identifies the requester."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from tests.controlplane.cluster import DEVELOPER_USER, ControlPlane
from tests.controlplane.pki import CertificateAuthority
from tests.controlplane.webhook_server import Decision, RecordingWebhook

WEBHOOK_NAME = "smoke.weightgate.dev"
DENIED_PREFIX = "deny-"


def inference_service(name: str) -> str:
    return yaml.safe_dump(
        {
            "apiVersion": "serving.kserve.io/v1beta1",
            "kind": "InferenceService",
            "metadata": {"name": name},
            "spec": {
                "predictor": {
                    "model": {
                        "modelFormat": {"name": "sklearn"},
                        "storageUri": "hf://weightgate-test/tiny",
                    }
                }
            },
        }
    )


def decide(request: dict[str, Any]) -> Decision:
    name = request["name"]
    if name.startswith(DENIED_PREFIX):
        return Decision(False, f"weightgate-smoke: model of {name} failed the scan")
    return Decision(True)


def webhook_configuration(name: str, url: str, ca_bundle: bytes, namespace: str) -> str:
    return json.dumps(
        {
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": name},
            "webhooks": [
                {
                    "name": WEBHOOK_NAME,
                    "clientConfig": {"url": url, "caBundle": base64.b64encode(ca_bundle).decode()},
                    "rules": [
                        {
                            "apiGroups": ["serving.kserve.io"],
                            "apiVersions": ["v1beta1"],
                            "operations": ["CREATE", "UPDATE"],
                            "resources": ["inferenceservices"],
                            "scope": "Namespaced",
                        }
                    ],
                    # only this test's namespace, so other tests never meet this webhook
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": namespace}
                    },
                    "failurePolicy": "Fail",
                    "sideEffects": "NoneOnDryRun",
                    "admissionReviewVersions": ["v1"],
                    "timeoutSeconds": 5,
                }
            ],
        }
    )


@dataclass
class Smoke:
    plane: ControlPlane
    hook: RecordingWebhook
    namespace: str

    def apply(self, name: str, *flags: str, kubeconfig: Any = None) -> Any:
        return self.plane.kubectl(
            "apply",
            "-n",
            self.namespace,
            *flags,
            "-f",
            "-",
            input=inference_service(name),
            kubeconfig=kubeconfig,
            check=False,
        )

    def exists(self, name: str) -> bool:
        found = self.plane.kubectl(
            "get",
            "inferenceservice",
            name,
            "-n",
            self.namespace,
            "--ignore-not-found",
            "-o",
            "name",
        )
        return bool(found.stdout.strip())


def install_webhook(
    plane: ControlPlane, hook: RecordingWebhook, namespace: str, ca_bundle: bytes
) -> str:
    name = f"weightgate-smoke-{namespace}"
    plane.kubectl(
        "apply", "-f", "-", input=webhook_configuration(name, hook.url, ca_bundle, namespace)
    )
    return name


def wait_until_called(smoke: Smoke, timeout: float = 30.0) -> None:
    """The apiserver picks up a new webhook configuration from a watch, a moment later:
    probe with server-side dry runs (which create nothing) until the webhook is called."""
    deadline = time.monotonic() + timeout
    while not smoke.hook.received():
        assert time.monotonic() < deadline, "kube-apiserver never called the webhook"
        smoke.apply("probe", "--dry-run=server")
        time.sleep(0.3)
    smoke.hook.forget()


@pytest.fixture
def smoke(control_plane: ControlPlane, namespace: str) -> Iterator[Smoke]:
    with RecordingWebhook(decide) as hook:
        config = install_webhook(control_plane, hook, namespace, hook.ca_bundle)
        state = Smoke(control_plane, hook, namespace)
        wait_until_called(state)
        yield state
        control_plane.kubectl("delete", "validatingwebhookconfiguration", config)


def test_denial_fails_kubectl_apply_with_the_webhook_message(smoke: Smoke) -> None:
    result = smoke.apply("deny-llama")

    assert result.returncode != 0
    assert f'admission webhook "{WEBHOOK_NAME}" denied the request' in result.stderr
    assert "weightgate-smoke: model of deny-llama failed the scan" in result.stderr
    [request] = smoke.hook.received()
    assert request["operation"] == "CREATE"
    assert request["kind"] == {
        "group": "serving.kserve.io",
        "version": "v1beta1",
        "kind": "InferenceService",
    }
    assert request["namespace"] == smoke.namespace
    assert request["dryRun"] is False
    assert request["object"]["spec"]["predictor"]["model"]["storageUri"] == (
        "hf://weightgate-test/tiny"
    )
    assert not smoke.exists("deny-llama")


def test_server_dry_run_reaches_the_webhook_flagged_and_stores_nothing(smoke: Smoke) -> None:
    allowed = smoke.apply("sklearn-iris", "--dry-run=server")
    denied = smoke.apply("deny-iris", "--dry-run=server")

    assert allowed.returncode == 0, allowed.stderr
    assert denied.returncode != 0
    assert "weightgate-smoke: model of deny-iris failed the scan" in denied.stderr
    requests = smoke.hook.received()
    assert [(r["name"], r["dryRun"]) for r in requests] == [
        ("sklearn-iris", True),
        ("deny-iris", True),
    ]
    assert not smoke.exists("sklearn-iris")


def test_allowed_object_is_stored_and_updates_are_reviewed(smoke: Smoke) -> None:
    created = smoke.apply("sklearn-iris")
    updated = smoke.plane.kubectl(
        "label", "inferenceservice", "sklearn-iris", "-n", smoke.namespace, "team=ml", check=False
    )

    assert created.returncode == 0, created.stderr
    assert updated.returncode == 0, updated.stderr
    assert smoke.exists("sklearn-iris")
    create, update = smoke.hook.received()
    assert (create["operation"], create["dryRun"]) == ("CREATE", False)
    assert update["operation"] == "UPDATE"
    assert update["oldObject"]["metadata"].get("labels") is None
    assert update["object"]["metadata"]["labels"] == {"team": "ml"}


def test_rbac_denies_the_developer_until_bound_and_the_webhook_sees_who_asked(
    smoke: Smoke,
) -> None:
    developer = smoke.plane.developer_kubeconfig
    forbidden = smoke.apply("sklearn-dev", kubeconfig=developer)
    assert forbidden.returncode != 0
    assert "forbidden" in forbidden.stderr.lower()
    assert smoke.hook.received() == []  # authorization comes before admission

    smoke.plane.kubectl(
        "create",
        "role",
        "isvc-editor",
        "-n",
        smoke.namespace,
        "--verb=get,list,create,patch,update",
        "--resource=inferenceservices.serving.kserve.io",
    )
    smoke.plane.kubectl(
        "create",
        "rolebinding",
        "developer-isvc-editor",
        "-n",
        smoke.namespace,
        "--role=isvc-editor",
        f"--user={DEVELOPER_USER}",
    )
    allowed = smoke.apply("sklearn-dev", kubeconfig=developer)

    assert allowed.returncode == 0, allowed.stderr
    [request] = smoke.hook.received()
    assert request["userInfo"]["username"] == DEVELOPER_USER
    assert "weightgate-test:developers" in request["userInfo"]["groups"]


def test_wrong_ca_bundle_fails_closed(control_plane: ControlPlane, namespace: str) -> None:
    with RecordingWebhook(decide) as hook:
        other_ca = CertificateAuthority("not-the-webhook-ca").cert_pem
        config = install_webhook(control_plane, hook, namespace, other_ca)
        smoke = Smoke(control_plane, hook, namespace)
        try:
            deadline = time.monotonic() + 30
            while True:  # until the configuration is live, the create succeeds
                result = smoke.apply("sklearn-untrusted", "--dry-run=server")
                if result.returncode != 0 or time.monotonic() > deadline:
                    break
                time.sleep(0.3)
        finally:
            control_plane.kubectl("delete", "validatingwebhookconfiguration", config)

    assert result.returncode != 0
    assert f'failed calling webhook "{WEBHOOK_NAME}"' in result.stderr
    assert "certificate" in result.stderr  # x509: certificate signed by unknown authority
    assert hook.received() == []  # the TLS handshake failed: no review was ever delivered


def test_unreachable_webhook_fails_closed(control_plane: ControlPlane, namespace: str) -> None:
    with RecordingWebhook(decide) as hook:
        config = install_webhook(control_plane, hook, namespace, hook.ca_bundle)
        smoke = Smoke(control_plane, hook, namespace)
        wait_until_called(smoke)
    # the server is gone now; failurePolicy Fail must reject, not admit
    try:
        result = smoke.apply("sklearn-orphan")
    finally:
        control_plane.kubectl("delete", "validatingwebhookconfiguration", config)

    assert result.returncode != 0
    assert f'failed calling webhook "{WEBHOOK_NAME}"' in result.stderr
    assert not smoke.exists("sklearn-orphan")
