"""The chart renders a complete, valid install for every values set: objects, labels, security, RBAC, HPA."""

from __future__ import annotations

import base64
import json
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.chart.conftest import CHART, MONITORING_API, NAMESPACE, RELEASE, VALUE_SETS, Doc, Render, Renders, helm

KUBERNETES_VERSION = "1.35.0"
NON_CORE_GROUPS = ("monitoring.coreos.com/", "cert-manager.io/")
PLATFORM_BEHAVIOR = {
    "scaleUp": {
        "stabilizationWindowSeconds": 0,
        "policies": [
            {"type": "Percent", "value": 100, "periodSeconds": 15},
            {"type": "Pods", "value": 4, "periodSeconds": 15},
        ],
        "selectPolicy": "Max",
    },
    "scaleDown": {
        "stabilizationWindowSeconds": 300,
        "policies": [{"type": "Percent", "value": 25, "periodSeconds": 60}],
    },
}


def pod_specs(docs: list[Doc]) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for d in docs:
        if d["kind"] in ("Deployment", "DaemonSet"):
            out.append((f"{d['kind']}/{d['metadata']['name']}", d["spec"]["template"]["spec"]))
        elif d["kind"] == "Pod":
            out.append((f"Pod/{d['metadata']['name']}", d["spec"]))
    return out


def test_helm_lint_strict() -> None:
    proc = helm("lint", "--strict", str(CHART), "--namespace", NAMESPACE)
    assert "0 chart(s) failed" in proc.stdout


def test_default_values_render_a_complete_install(renders: Renders) -> None:
    r = renders.get("default")
    kinds = sorted(f"{d['kind']}" for d in r.docs)
    for kind, count in {
        "Deployment": 2,
        "DaemonSet": 1,
        "Service": 2,
        "APIService": 3,  # external v1beta1, custom v1beta2 and v1beta1
        "PodDisruptionBudget": 1,
        "ServiceAccount": 4,  # exporter, gpu, adapter, helm test
        "ClusterRole": 2,  # the HPA controller's metrics reader, the adapter's pod reader
        "ClusterRoleBinding": 3,
        "RoleBinding": 1,
        "Pod": 1,  # helm test hook
    }.items():
        assert kinds.count(kind) == count, (kind, kinds)
    secrets = {d["type"] for d in r.of_kind("Secret")}
    assert secrets == {"Opaque", "kubernetes.io/tls"}  # broker URL, serving certificate
    assert not [d for d in r.docs if d["apiVersion"].startswith("monitoring.coreos.com/")]
    for d in r.docs:
        if d["kind"] not in ("APIService", "ClusterRole", "ClusterRoleBinding"):
            assert d["metadata"]["namespace"] == ("kube-system" if d["kind"] == "RoleBinding" else NAMESPACE)


@pytest.mark.parametrize("values_set", VALUE_SETS)
def test_core_objects_pass_kubernetes_validate_strict(renders: Renders, values_set: str) -> None:
    failures = []
    for d in renders.get(values_set).docs:
        if d["apiVersion"].startswith(NON_CORE_GROUPS):
            continue
        try:
            kubernetes_validate.validate(d, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            failures.append(f"{d['kind']}/{d['metadata']['name']}: {'.'.join(map(str, exc.path))}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            failures.append(exc.message)
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("values_set", VALUE_SETS)
def test_every_object_carries_the_standard_labels(renders: Renders, values_set: str) -> None:
    for d in renders.get(values_set).docs:
        labels = d["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "lensing-metrics"
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/version"]
        assert labels["app.kubernetes.io/component"]


@pytest.mark.parametrize("values_set", ["default", "full"])
def test_security_contexts_are_on_by_default(renders: Renders, values_set: str) -> None:
    specs = pod_specs(renders.get(values_set).docs)
    assert len(specs) == 4
    for where, spec in specs:
        psc = spec["securityContext"]
        assert psc["runAsNonRoot"] is True, where
        assert isinstance(psc["runAsUser"], int) and psc["runAsUser"] > 0, where
        assert psc["seccompProfile"] == {"type": "RuntimeDefault"}, where
        # hostPID only where GPU attribution asks for it (gpu.attribution, explained in values.yaml)
        assert spec.get("hostPID", False) is where.startswith("DaemonSet/"), where
        assert not spec.get("hostNetwork") and not spec.get("hostIPC"), where
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc.get("privileged") is False, where
            assert sc["capabilities"] == {"drop": ["ALL"]}, where
            assert c["resources"]["requests"] and c["resources"]["limits"]["memory"], where
            assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"], where


def test_exporter_and_gpu_collector_share_the_image_with_different_arguments(renders: Renders) -> None:
    r = renders.get("default")
    exporter = r.one("Deployment", "-exporter")["spec"]["template"]["spec"]["containers"][0]
    gpu = r.one("DaemonSet", "-gpu")["spec"]["template"]["spec"]["containers"][0]
    assert exporter["image"] == gpu["image"] == "lensing-metrics:0.1.0"
    assert exporter["args"][:3] == ["exporter", "--gpu", "off"]
    assert gpu["args"][:4] == ["exporter", "--gpu", "on", "--no-events"]
    broker_env = [e for e in exporter["env"] if e["name"] == "CELERY_BROKER_URL"]
    assert broker_env[0]["valueFrom"]["secretKeyRef"]["key"] == "broker-url"
    assert "CELERY_BROKER_URL" not in {e["name"] for e in gpu["env"]}


def test_gpu_daemonset_runs_on_gpu_nodes_without_privilege(renders: Renders) -> None:
    ds = renders.get("default").one("DaemonSet")
    spec = ds["spec"]["template"]["spec"]
    assert spec["nodeSelector"] == {"workload": "gpu"}
    assert {"key": "nvidia.com/gpu", "operator": "Equal", "value": "true", "effect": "NoSchedule"} in spec[
        "tolerations"
    ]
    assert "runtimeClassName" not in spec
    mount = next(m for m in spec["containers"][0]["volumeMounts"] if m["name"] == "pod-resources")
    assert mount == {"name": "pod-resources", "mountPath": "/var/lib/kubelet/pod-resources", "readOnly": True}
    volume = next(v for v in spec["volumes"] if v["name"] == "pod-resources")
    assert volume["hostPath"]["path"] == "/var/lib/kubelet/pod-resources"
    sc = spec["containers"][0]["securityContext"]
    assert "add" not in sc["capabilities"] and sc["privileged"] is False
    assert "nvidia.com/gpu" not in str(spec["containers"][0]["resources"])  # takes no GPU from the workers
    full = renders.get("full").one("DaemonSet")["spec"]["template"]["spec"]
    assert full["runtimeClassName"] == "nvidia"


def test_adapter_is_highly_available_behind_its_service(renders: Renders) -> None:
    r = renders.get("default")
    dep = r.one("Deployment", "-adapter")
    selector = dep["spec"]["selector"]["matchLabels"]
    assert dep["spec"]["replicas"] == 2
    pdb = r.one("PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == selector and pdb["spec"]["maxUnavailable"] == 1
    anti = dep["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    term = anti["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
    assert term["labelSelector"]["matchLabels"] == selector and term["topologyKey"] == "kubernetes.io/hostname"
    container = dep["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][0] == "adapter" and "--secure-port=6443" in container["args"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "https", "scheme": "HTTPS"}
    svc = r.one("Service", "-adapter")
    assert svc["spec"]["selector"] == selector
    assert svc["spec"]["ports"] == [{"name": "https", "port": 443, "targetPort": "https", "protocol": "TCP"}]
    api = r.one("APIService", ".external.metrics.k8s.io")
    assert api["metadata"]["name"] == "v1beta1.external.metrics.k8s.io"
    assert api["spec"]["service"] == {"name": svc["metadata"]["name"], "namespace": NAMESPACE, "port": 443}
    assert api["spec"]["caBundle"] and "insecureSkipTLSVerify" not in api["spec"]


def test_adapter_hard_anti_affinity_and_config_file(renders: Renders) -> None:
    r = renders.get("full")
    spec = r.one("Deployment", "-adapter")["spec"]["template"]["spec"]
    required = spec["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert required[0]["topologyKey"] == "kubernetes.io/hostname"
    container = spec["containers"][0]
    assert "--config=/etc/lensing-metrics/adapter.yaml" in container["args"]
    assert {"name": "config", "mountPath": "/etc/lensing-metrics", "readOnly": True} in container["volumeMounts"]
    secret = r.one("Secret", "-adapter-config")  # may hold broker credentials: a Secret, not a ConfigMap
    config = yaml.safe_load(base64.b64decode(secret["data"]["adapter.yaml"]))
    assert config == {"brokers": [{"name": "main", "url": "redis://redis:6379/0"}]}
    # CELERY_BROKER_URL would be read as --broker-url, which the adapter refuses next to --config
    assert [e["name"] for e in container["env"]] == ["LENSING_BROKER_URL"]
    default = renders.get("default").one("Deployment", "-adapter")["spec"]["template"]["spec"]["containers"][0]
    assert [e["name"] for e in default["env"]] == ["CELERY_BROKER_URL"]
    volume = next(v for v in spec["volumes"] if v["name"] == "config")
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]
    assert not [d for d in renders.get("default").of_kind("Secret") if d["metadata"]["name"].endswith("-config")]


DEFAULT_PROMETHEUS = "http://kube-prometheus-stack-prometheus.monitoring.svc:9090"
CUSTOM = ("v1beta2.custom.metrics.k8s.io", "v1beta1.custom.metrics.k8s.io")


def adapter_args(r: Render) -> list[str]:
    return list(r.one("Deployment", "-adapter")["spec"]["template"]["spec"]["containers"][0]["args"])


def test_custom_metrics_are_on_by_default_and_point_at_prometheus(renders: Renders) -> None:
    r = renders.get("default")
    apis = {d["metadata"]["name"]: d["spec"] for d in r.of_kind("APIService")}
    assert set(apis) == {"v1beta1.external.metrics.k8s.io", *CUSTOM}
    v2, v1 = (apis[name] for name in CUSTOM)
    assert (v2["group"], v2["version"], v1["group"], v1["version"]) == (
        "custom.metrics.k8s.io", "v1beta2", "custom.metrics.k8s.io", "v1beta1",
    )  # fmt: skip
    assert v2["versionPriority"] > v1["versionPriority"]
    assert v2["groupPriorityMinimum"] == v1["groupPriorityMinimum"]
    external = apis["v1beta1.external.metrics.k8s.io"]
    for spec in (v2, v1):  # the same Service and the same CA as the external metrics
        assert spec["service"] == external["service"] and spec["caBundle"] == external["caBundle"]
        assert "insecureSkipTLSVerify" not in spec
    assert f"--prometheus-url={DEFAULT_PROMETHEUS}" in adapter_args(r)


@pytest.mark.parametrize("values_set", ["tls-cert-manager", "tls-existing-secret", "insecure-by-name"])
def test_custom_metrics_apiservices_follow_the_tls_mode(renders: Renders, values_set: str) -> None:
    apis = {d["metadata"]["name"]: d for d in renders.get(values_set).of_kind("APIService")}
    external = apis["v1beta1.external.metrics.k8s.io"]
    for name in CUSTOM:
        assert apis[name]["metadata"].get("annotations") == external["metadata"].get("annotations"), name
        for key in ("caBundle", "insecureSkipTLSVerify"):
            assert apis[name]["spec"].get(key) == external["spec"].get(key), (name, key)


def test_custom_metrics_off_registers_nothing_and_passes_no_prometheus(renders: Renders) -> None:
    r = renders.get("features-off")
    assert [d["metadata"]["name"] for d in r.of_kind("APIService")] == ["v1beta1.external.metrics.k8s.io"]
    assert not [a for a in adapter_args(r) if a.startswith("--prometheus-url")]
    assert [d["metadata"]["name"] for d in r.of_kind("ClusterRole")] == [
        f"{RELEASE}-lensing-metrics-adapter:metrics-reader"
    ]
    assert r.one("ClusterRole")["rules"][0]["apiGroups"] == ["external.metrics.k8s.io"]
    # never an APIService without --prometheus-url: the adapter would not serve the group
    proc = helm("template", RELEASE, str(CHART), "--set", "adapter.customMetrics.prometheusUrl=", check=False)
    assert proc.returncode != 0 and "adapter.customMetrics.prometheusUrl" in proc.stderr


def test_rbac_is_what_the_adapter_and_the_hpa_controller_need(renders: Renders) -> None:
    r = renders.get("default")
    sa = r.one("Deployment", "-adapter")["spec"]["template"]["spec"]["serviceAccountName"]
    subject = {"kind": "ServiceAccount", "name": sa, "namespace": NAMESPACE}
    crbs = {d["roleRef"]["name"]: d for d in r.of_kind("ClusterRoleBinding")}
    assert crbs["system:auth-delegator"]["subjects"] == [subject]
    rb = r.one("RoleBinding")
    assert rb["metadata"]["namespace"] == "kube-system"
    assert rb["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "extension-apiserver-authentication-reader",
    }
    assert rb["subjects"] == [subject]
    reader = r.one("ClusterRole", ":metrics-reader")
    assert reader["rules"] == [
        {
            "apiGroups": ["external.metrics.k8s.io", "custom.metrics.k8s.io"],
            "resources": ["*"],
            "verbs": ["get", "list"],
        }
    ]
    assert crbs[reader["metadata"]["name"]]["subjects"] == [
        {"kind": "ServiceAccount", "name": "horizontal-pod-autoscaler", "namespace": "kube-system"}
    ]
    # the adapter lists pods by label selector for custom metrics, and reads nothing else
    pods = r.one("ClusterRole", ":pod-reader")
    assert pods["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}]
    assert crbs[pods["metadata"]["name"]]["subjects"] == [subject]
    assert crbs[pods["metadata"]["name"]]["roleRef"]["kind"] == "ClusterRole"
    assert len(r.of_kind("Role")) == 0 and len(r.of_kind("ClusterRole")) == 2
    # the exporters call no Kubernetes API: no token in their pods
    for suffix, kind in (("-exporter", "Deployment"), ("-gpu", "DaemonSet")):
        assert r.one(kind, suffix)["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


def test_worker_hpa_scales_the_existing_deployment_on_the_queue(renders: Renders) -> None:
    assert not renders.get("default").of_kind("HorizontalPodAutoscaler")
    hpa = renders.get("full").one("HorizontalPodAutoscaler", "lensing-celery-worker")
    spec = hpa["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "lensing-celery-worker"}
    assert (spec["minReplicas"], spec["maxReplicas"]) == (2, 10)
    assert spec["metrics"] == [
        {
            "type": "External",
            "external": {
                "metric": {"name": "celery_queue_length", "selector": {"matchLabels": {"queue": "celery"}}},
                "target": {"type": "AverageValue", "averageValue": "10"},
            },
        }
    ]
    assert spec["behavior"] == PLATFORM_BEHAVIOR


def test_worker_hpa_backlog_metric_and_bad_values(tmp_path: Any) -> None:
    ok = helm(
        "template", RELEASE, str(CHART), "-n", NAMESPACE, "-s", "templates/autoscaling/worker-hpa.yaml",
        "--set", "workerHPA.enabled=true", "--set", "workerHPA.metric=celery_queue_backlog",
        "--set", "workerHPA.queue=gpu", "--set", "workerHPA.extraSelector.broker=main",
    )  # fmt: skip
    metric = yaml.safe_load(ok.stdout)["spec"]["metrics"][0]["external"]["metric"]
    assert metric == {"name": "celery_queue_backlog", "selector": {"matchLabels": {"broker": "main", "queue": "gpu"}}}
    bad = helm("template", RELEASE, str(CHART), "--set", "workerHPA.metric=celery_tasks_total", check=False)
    assert bad.returncode != 0 and "celery_queue_backlog" in bad.stderr


@pytest.mark.parametrize("values_set", ["default", "monitoring-forced", "monitoring-api"])
def test_monitoring_objects_follow_the_api_or_the_force_value(renders: Renders, values_set: str) -> None:
    r = renders.get(values_set)
    monitors = sorted(
        (d["kind"], d["metadata"]["name"].removeprefix(f"{RELEASE}-lensing-metrics-"))
        for d in r.docs
        if d["kind"] in ("ServiceMonitor", "PodMonitor")
    )
    if values_set == "default":
        assert monitors == []
        return
    assert monitors == [("PodMonitor", "gpu"), ("ServiceMonitor", "adapter"), ("ServiceMonitor", "exporter")]
    for d in r.docs:
        if d["apiVersion"] == MONITORING_API:
            assert d["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    exporter = r.one("ServiceMonitor", "-exporter")
    assert exporter["spec"]["selector"]["matchLabels"] == r.one("Service", "-exporter")["spec"]["selector"]
    adapter = r.one("ServiceMonitor", "-adapter")["spec"]["endpoints"][0]
    assert adapter["scheme"] == "https" and adapter["tlsConfig"]["ca"]["secret"]["key"] == "ca.crt"
    assert "insecureSkipVerify" not in adapter["tlsConfig"]


@pytest.mark.parametrize("values_set", ["monitoring-api", "full"])
def test_monitoring_objects_validate_against_prometheus_operator(
    renders: Renders, values_set: str, promop_validate: Any
) -> None:
    objects = [d for d in renders.get(values_set).docs if d["apiVersion"] == MONITORING_API]
    assert {d["kind"] for d in objects} >= {"ServiceMonitor", "PodMonitor"}
    if values_set == "full":
        assert "PrometheusRule" in {d["kind"] for d in objects}
    results = promop_validate(objects)
    assert [r for r in results if r["error"]] == []
    # and the validators do reject a broken object
    monitor = next(d for d in objects if d["kind"] == "ServiceMonitor")
    broken = {**monitor, "spec": {**monitor["spec"], "endpoints": [{"port": "https", "interval": "15 seconds"}]}}
    assert "interval" in promop_validate([broken])[0]["error"]


def test_network_policies_admit_scrapes_and_the_adapter_port(renders: Renders) -> None:
    assert not renders.get("default").of_kind("NetworkPolicy")
    policies = {d["metadata"]["name"].rsplit("-", 1)[-1]: d for d in renders.get("full").of_kind("NetworkPolicy")}
    assert set(policies) == {"exporter", "gpu", "adapter"}
    assert policies["adapter"]["spec"]["ingress"] == [{"ports": [{"port": 6443, "protocol": "TCP"}]}]
    # ingress only: the adapter's egress (broker, Prometheus for custom metrics, the Kubernetes API) stays open
    assert {p for d in policies.values() for p in d["spec"]["policyTypes"]} == {"Ingress"}
    assert policies["exporter"]["spec"]["ingress"][0]["from"][0]["namespaceSelector"]


def test_schema_rejects_unknown_values_with_a_message() -> None:
    proc = helm("template", RELEASE, str(CHART), "--set", "adapter.tls.mode=self-signed", check=False)
    assert proc.returncode != 0 and "generated" in proc.stderr and "cert-manager" in proc.stderr
    proc = helm("template", RELEASE, str(CHART), "--set", "broker.url=", check=False)
    assert proc.returncode != 0 and "broker.existingSecret" in proc.stderr


def test_every_value_is_documented() -> None:
    lines = (CHART / "values.yaml").read_text().splitlines()
    undocumented = []
    for n, line in enumerate(lines):
        stripped = line.strip()
        if not stripped or stripped.startswith(("#", "-")) or ":" not in stripped:
            continue
        key_indent = len(line) - len(line.lstrip())
        above = lines[n - 1].strip() if n else ""
        inside_list = any(
            prev.strip().startswith("- ") and len(prev) - len(prev.lstrip()) < key_indent
            for prev in lines[max(0, n - 3) : n]
        )
        if not above.startswith("#") and not inside_list:
            undocumented.append(f"values.yaml:{n + 1}: {stripped}")
    assert not undocumented, "\n".join(undocumented)


def test_image_digest_wins_over_tag() -> None:
    digest = "sha256:" + "a" * 64
    out = helm(
        "template", RELEASE, str(CHART), "-s", "templates/exporter/deployment.yaml",
        "--set", "image.repository=registry.local/lensing-metrics", "--set", f"image.digest={digest}",
    ).stdout  # fmt: skip
    assert f"image: registry.local/lensing-metrics@{digest}" in out


def test_notes_say_how_to_check_the_apiservice_and_read_a_value() -> None:
    out = helm(
        "install", RELEASE, str(CHART), "-n", NAMESPACE, "--dry-run=client", "--set", "workerHPA.enabled=true"
    ).stdout
    notes = out[out.index("NOTES:") :]
    assert "kubectl get apiservice v1beta1.external.metrics.k8s.io" in notes
    assert (
        f'kubectl get --raw "/apis/external.metrics.k8s.io/v1beta1/namespaces/{NAMESPACE}/celery_queue_length'
        '?labelSelector=queue%3Dcelery"' in notes
    )
    assert "monitoring.force=true" in notes  # no monitoring API here: the notes say what was left out
    assert f"helm test {RELEASE}" in notes


API_HPA_METRICS = [  # the platform design's API HPA (section 1.3)
    {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}},
    {"type": "Resource", "resource": {"name": "memory", "target": {"type": "Utilization", "averageUtilization": 80}}},
    {
        "type": "Pods",
        "pods": {
            "metric": {"name": "http_requests_per_second"},
            "target": {"type": "AverageValue", "averageValue": "1000"},
        },
    },
]


def test_api_hpa_example_is_the_platforms(renders: Renders) -> None:
    assert not [h for h in renders.get("default").of_kind("HorizontalPodAutoscaler")]
    hpa = renders.get("full").one("HorizontalPodAutoscaler", "lensing-api-hpa")
    assert hpa["apiVersion"] == "autoscaling/v2" and hpa["metadata"]["namespace"] == NAMESPACE
    spec = hpa["spec"]
    assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "lensing-api"}
    assert (spec["minReplicas"], spec["maxReplicas"]) == (3, 20)
    assert spec["metrics"] == API_HPA_METRICS
    assert spec["behavior"] == PLATFORM_BEHAVIOR
    # its Pods metric needs the custom metrics API: refused without it, with the value to set
    proc = helm(
        "template", RELEASE, str(CHART), "--set", "apiHPA.enabled=true", "--set", "adapter.customMetrics.enabled=false",
        check=False,
    )  # fmt: skip
    assert proc.returncode != 0 and "adapter.customMetrics.enabled" in proc.stderr


def test_gpu_attribution_mounts_the_workers_task_directory_read_only(renders: Renders) -> None:
    from lensing_sources.gpu.celery_hook import DEFAULT_TASK_DIR

    spec = renders.get("default").one("DaemonSet")["spec"]["template"]["spec"]
    container = spec["containers"][0]
    assert spec["hostPID"] is True  # NVML's host PIDs -> /proc/<pid>/status and stat
    assert f"--gpu-task-dir={DEFAULT_TASK_DIR}" in container["args"]
    assert {"name": "gpu-tasks", "mountPath": DEFAULT_TASK_DIR, "readOnly": True} in container["volumeMounts"]
    volume = next(v for v in spec["volumes"] if v["name"] == "gpu-tasks")
    assert volume["hostPath"] == {"path": DEFAULT_TASK_DIR, "type": "DirectoryOrCreate"}
    # hostPID adds no privilege: still non-root, nothing added, no escalation
    sc = container["securityContext"]
    assert sc["privileged"] is False and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]} and sc["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] != 0
    off = renders.get("features-off").one("DaemonSet")["spec"]["template"]["spec"]
    assert "hostPID" not in off
    assert not [a for a in off["containers"][0]["args"] if a.startswith("--gpu-task-dir")]
    assert "gpu-tasks" not in {v["name"] for v in off["volumes"]}


def parse_with_the_cli(args: list[str]) -> tuple[Any, list[str]]:
    from lensing_metrics.cli import build_parser

    namespace, unknown = build_parser().parse_known_args(args)  # a bad value exits (code 2): the test fails
    return namespace, unknown


# The Celery events options (--events/--no-events) come with issue 3 (lensing_sources/events/options.py).
# Until it is merged the exporter's parser lacks them; the chart already uses the final name.
EVENTS_FLAGS_MERGED = not parse_with_the_cli(["exporter", "--no-events"])[1]


@pytest.mark.parametrize("values_set", ["default", "full"])
def test_container_arguments_are_what_the_cli_accepts(renders: Renders, values_set: str) -> None:
    r = renders.get(values_set)
    for kind, suffix in (("Deployment", "-exporter"), ("DaemonSet", "-gpu"), ("Deployment", "-adapter")):
        container = r.one(kind, suffix)["spec"]["template"]["spec"]["containers"][0]
        args, unknown = parse_with_the_cli(container["args"])
        pending = [] if EVENTS_FLAGS_MERGED or suffix != "-gpu" else ["--no-events"]
        assert unknown == pending, (suffix, unknown)
        if suffix == "-gpu":
            assert (args.gpu, args.gpu_task_dir, args.listen) == (
                "on",
                "/run/lensing-metrics/gpu-tasks",
                ("0.0.0.0", 9808),
            )
            if EVENTS_FLAGS_MERGED:
                assert args.events is False
        elif suffix == "-exporter":
            assert args.gpu == "off"
        else:
            assert args.prometheus_url == DEFAULT_PROMETHEUS and args.secure_port == 6443
            assert (args.tls_cert_file, args.tls_private_key_file) == (
                "/var/run/serving-cert/tls.crt",
                "/var/run/serving-cert/tls.key",
            )


@pytest.mark.parametrize(
    ("values_set", "groups"),
    [
        (
            "default",
            ["external.metrics.k8s.io/v1beta1", "custom.metrics.k8s.io/v1beta2", "custom.metrics.k8s.io/v1beta1"],
        ),
        ("features-off", ["external.metrics.k8s.io/v1beta1"]),
    ],
)
def test_helm_test_hook_asks_for_every_registered_group_version(
    renders: Renders, values_set: str, groups: list[str]
) -> None:
    hook = renders.get(values_set).one("Pod")
    script = hook["spec"]["containers"][0]["args"][0]
    compile(script, "helm-test-hook", "exec")  # the rendered Python is valid
    assert f"groups = {json.dumps(groups, separators=(',', ':'))}" in script
    registered = sorted(
        f"{d['spec']['group']}/{d['spec']['version']}" for d in renders.get(values_set).of_kind("APIService")
    )
    assert sorted(groups) == registered


def test_idle_first_scaling_renders_the_workers_needed_hpa_and_a_namespaced_pod_role(renders: Renders) -> None:
    r = renders.get("idle-first")
    hpa = r.one("HorizontalPodAutoscaler", "lensing-celery-worker")
    assert hpa["metadata"]["namespace"] == "lensing-production"
    assert hpa["spec"]["metrics"][0]["external"] == {
        "metric": {"name": "celery_queue_workers_needed", "selector": {"matchLabels": {"queue": "celery"}}},
        "target": {"type": "AverageValue", "averageValue": "1"},
    }
    # get/list/watch/patch on pods in the workers' namespace: a Role there, not a ClusterRole
    role = r.one("Role", "-pod-deletion-cost")
    assert role["metadata"]["namespace"] == "lensing-production"
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch", "patch"]}]
    binding = r.one("RoleBinding", "-pod-deletion-cost")
    assert binding["metadata"]["namespace"] == "lensing-production"
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    (sa,) = [d["metadata"]["name"] for d in r.of_kind("ServiceAccount") if d["metadata"]["name"].endswith("-adapter")]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa, "namespace": NAMESPACE}]
    args = r.one("Deployment", "-adapter")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert {
        "--pod-deletion-cost",
        "--worker-namespace=lensing-production",
        "--worker-pod-selector=app=lensing,component=celery-worker",
        "--worker-pod-pattern=^[^@]*@(?P<pod>[^.]+)",
        "--worker-drain-timeout=1800",
    } <= set(args)
    # off by default: no Role, no flag
    default = renders.get("default")
    assert not default.of_kind("Role")
    assert not any(
        a.startswith("--pod-deletion-cost")
        for a in default.one("Deployment", "-adapter")["spec"]["template"]["spec"]["containers"][0]["args"]
    )
