"""Static checks of everything a user deploys: Dockerfile, Kubernetes, Prometheus, Grafana, compose.

Each check runs the tool a user's CI would (hadolint, kubectl kustomize + kubernetes-validate,
promtool, check-jsonschema) and skips, naming the tool, where it is missing; .ci/install-tools.sh
installs them all, so CI runs every check.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from rmserve import metrics
from rmserve.config import PREFIX, Settings
from tests.deploy.helpers import (
    DASHBOARD,
    DEPLOY,
    GRAFANA_DIR,
    PROMETHEUS_DIR,
    ROOT,
    alert_rules,
    dashboard_panels,
    grafana_to_promql,
)

K8S = DEPLOY / "k8s"
METRIC_SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_created")


def tool(name: str) -> str:
    """The tool's path (PATH, then this venv), or skip the test naming what to install."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        pytest.skip(f"{name} is not installed (.ci/install-tools.sh installs it)")
    return found


def run(*argv: str, cwd: Path = ROOT) -> str:
    result = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, f"{' '.join(argv)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def declared_metrics() -> set[str]:
    """Every metric service/metrics.py declares, by base name (counters without `_total`)."""
    declared = [value for value in vars(metrics).values() if isinstance(value, MetricWrapperBase)]
    return {family.name for metric in declared for family in metric.describe()}


def metric_names(promql: str) -> set[str]:
    """The rmserve metrics a PromQL expression reads, by base name."""
    names = set()
    for name in re.findall(r"\brmserve_[a-z_]+", promql):
        for suffix in METRIC_SUFFIXES:
            if name.endswith(suffix) and name.removesuffix(suffix) in declared_metrics():
                name = name.removesuffix(suffix)
        names.add(name)
    return names


def settings_names() -> set[str]:
    return {PREFIX + setting.name.upper() for setting in fields(Settings)}


# Dockerfile ------------------------------------------------------------------------------------


def test_dockerfile_passes_hadolint() -> None:
    run(tool("hadolint"), "Dockerfile")


def test_runtime_image_runs_as_non_root_and_installs_only_serving_dependencies() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    runtime_stage = dockerfile.replace("\\\n", " ").split("\nFROM ")[-1]
    users = re.findall(r"^USER\s+(\S+)", runtime_stage, re.MULTILINE)
    assert users and users[-1].split(":")[0] not in ("0", "root")
    healthcheck = re.search(r"^HEALTHCHECK .*", runtime_stage, re.MULTILINE)
    assert healthcheck is not None and "/readyz" in healthcheck.group(0)
    assert re.search(r'^ENTRYPOINT \["rmserve"\]\nCMD \["serve"\]', runtime_stage, re.MULTILINE)
    installs = re.findall(r"pip install [^&\n]*", dockerfile.replace("\\\n", " "))
    assert installs and not [line for line in installs if "[" in line or " -e " in line], (
        f"the image installs the package non-editable, without the [train]/[dev] extras: {installs}"
    )


def test_dockerignore_lets_in_everything_the_dockerfile_copies() -> None:
    allowed = [
        line[1:].rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines() if line.startswith("!")
    ]
    copied = re.findall(r"^COPY (?!--from)(?:--\S+ )*(.+) \S+$", (ROOT / "Dockerfile").read_text(), re.MULTILINE)
    for source in " ".join(copied).split():
        source = source.rstrip("/")
        assert (ROOT / source).exists() or source == "README.md", f"COPY {source}: no such file"
        assert any(source == entry or source.startswith(entry + "/") for entry in allowed), (
            f"COPY {source} is excluded by .dockerignore"
        )


# Kubernetes ------------------------------------------------------------------------------------


def kustomize(directory: Path) -> list[dict[str, Any]]:
    rendered = run(tool("kubectl"), "kustomize", str(directory))
    return [document for document in yaml.safe_load_all(rendered) if document]


def one(resources: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    (found,) = [resource for resource in resources if resource["kind"] == kind]
    return found


@pytest.fixture(scope="module")
def base() -> list[dict[str, Any]]:
    return kustomize(K8S)


@pytest.fixture(scope="module")
def monitoring() -> list[dict[str, Any]]:
    return kustomize(K8S / "overlays" / "monitoring")


def test_manifests_match_the_kubernetes_schemas(tmp_path: Path) -> None:
    validator = tool("kubernetes-validate")
    for directory in (K8S, K8S / "overlays" / "monitoring"):
        rendered = tmp_path / "rendered.yaml"
        rendered.write_text(run(tool("kubectl"), "kustomize", str(directory)))
        output = run(validator, "--strict", str(rendered))
        assert "passed for resource deployment/rmserve" in output
        # Only the ServiceMonitor (a CRD, checked below) may lack a schema.
        unchecked = [line for line in output.splitlines() if "Couldn't find schema" in line]
        assert all("kind ServiceMonitor" in line for line in unchecked), unchecked


def test_base_applies_without_the_prometheus_operator(base: list[dict[str, Any]]) -> None:
    kinds = {resource["kind"] for resource in base}
    assert kinds == {"ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"}


def test_config_map_sets_only_real_settings(base: list[dict[str, Any]]) -> None:
    config = one(base, "ConfigMap")["data"]
    unknown = set(config) - settings_names()
    assert not unknown, f"not RMSERVE_* settings (a typo is silently ignored): {sorted(unknown)}"
    Settings.from_env(config)  # the values parse and validate


def test_deployment_probes_drains_and_runs_locked_down(base: list[dict[str, Any]]) -> None:
    deployment, config = one(base, "Deployment"), one(base, "ConfigMap")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["envFrom"] == [{"configMapRef": {"name": config["metadata"]["name"]}}]
    port = int(config["data"]["RMSERVE_PORT"])
    assert {"name": "http", "containerPort": port} in container["ports"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}

    # The pod is killed only after the preStop pause and the server's own graceful drain.
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    graceful_s = float(config["data"]["RMSERVE_GRACEFUL_TIMEOUT_S"])
    batcher_stop_s = 5  # rmserve/gunicorn_conf.py BATCHER_STOP_S
    assert pod["terminationGracePeriodSeconds"] > int(command[1]) + graceful_s + batcher_stop_s
    # Kubernetes waits for a loading pod as long as gunicorn keeps a loading worker alive.
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= float(config["data"]["RMSERVE_BOOT_TIMEOUT_S"])

    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    tmp = [mount for mount in container["volumeMounts"] if mount["mountPath"] == "/tmp"]
    assert tmp and "emptyDir" in {volume["name"]: volume for volume in pod["volumes"]}[tmp[0]["name"]]
    resources = container["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"]) & set(resources["limits"])
    # Executors and ONNX Runtime threads follow the CPU limit (cgroup quota), never the node's cores.
    assert config["data"]["RMSERVE_EXECUTORS"] == config["data"]["RMSERVE_INFERENCE_THREADS"] == "0"
    assert cpu_cores(resources["limits"]["cpu"]) >= 1

    api_keys = {variable["name"]: variable for variable in container["env"]}["RMSERVE_API_KEYS"]
    assert api_keys["valueFrom"]["secretKeyRef"]["optional"] is True


def cpu_cores(quantity: str) -> float:
    """A Kubernetes CPU quantity ("2", "1500m") in cores."""
    return float(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def test_service_hpa_and_budget_select_the_deployment(base: list[dict[str, Any]]) -> None:
    deployment = one(base, "Deployment")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    service, hpa, budget = one(base, "Service"), one(base, "HorizontalPodAutoscaler"), one(base, "PodDisruptionBudget")
    assert service["spec"]["selector"].items() <= pod_labels.items()
    assert budget["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert hpa["spec"]["minReplicas"] > budget["spec"]["maxUnavailable"], "a node drain must leave a replica serving"


def test_service_monitor_scrapes_the_service(monitoring: list[dict[str, Any]]) -> None:
    service, monitor = one(monitoring, "Service"), one(monitoring, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    port_names = {port["name"] for port in service["spec"]["ports"]}
    assert [(endpoint["port"], endpoint["path"]) for endpoint in monitor["spec"]["endpoints"]] == [("http", "/metrics")]
    assert "http" in port_names


# Prometheus ------------------------------------------------------------------------------------


def test_prometheus_config_and_rules_pass_promtool() -> None:
    output = run(tool("promtool"), "check", "config", "prometheus.yml", cwd=PROMETHEUS_DIR)
    assert f"SUCCESS: {len(alert_rules())} rules found" in output


def test_alerts_fire_in_promtool_unit_tests() -> None:
    run(tool("promtool"), "test", "rules", "alerts.test.yml", cwd=PROMETHEUS_DIR)


def test_every_alert_has_a_test_that_fires_it() -> None:
    tests = yaml.safe_load((PROMETHEUS_DIR / "alerts.test.yml").read_text())["tests"]
    fired = {case["alertname"] for test in tests for case in test["alert_rule_test"] if case.get("exp_alerts")}
    assert fired == {rule["alert"] for rule in alert_rules()}


def test_alerts_read_declared_metrics() -> None:
    for rule in alert_rules():
        assert metric_names(rule["expr"]) <= declared_metrics(), rule["alert"]


# Grafana ---------------------------------------------------------------------------------------


def dashboard_exprs() -> list[str]:
    return [target["expr"] for panel in dashboard_panels() for target in panel["targets"]]


def test_dashboard_shows_every_declared_metric_and_only_those() -> None:
    shown = set().union(*(metric_names(expr) for expr in dashboard_exprs()))
    assert shown == declared_metrics()


def test_dashboard_panels_have_unique_ids_and_use_the_datasource_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert "datasource" in {variable["name"] for variable in dashboard["templating"]["list"]}
    for panel in dashboard_panels():
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    rules = []
    for index, expr in enumerate(map(grafana_to_promql, dashboard_exprs())):
        assert "$" not in expr, f"unknown Grafana variable in {expr}"
        rules.append({"record": f"dashboard:query_{index}", "expr": expr})
    rules_file = tmp_path / "dashboard-queries.yml"
    rules_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    run(tool("promtool"), "check", "rules", str(rules_file))


def test_grafana_provisioning_points_at_the_dashboard_and_prometheus() -> None:
    provider = yaml.safe_load((GRAFANA_DIR / "provisioning" / "dashboards" / "rmserve.yml").read_text())["providers"][0]
    datasource = yaml.safe_load((GRAFANA_DIR / "provisioning" / "datasources" / "prometheus.yml").read_text())
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    mounts = dict(volume.rsplit(":", 1)[0].split(":") for volume in compose["services"]["grafana"]["volumes"])
    assert mounts["./grafana/dashboards"] == provider["options"]["path"]
    assert datasource["datasources"][0]["type"] == "prometheus"
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"


# Compose ---------------------------------------------------------------------------------------


def test_compose_file_matches_the_compose_spec() -> None:
    run(tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", "compose.yaml", cwd=DEPLOY)


def test_compose_mounts_and_builds_files_that_exist() -> None:
    services = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]
    build = services["rmserve"]["build"]
    assert (DEPLOY / build["context"] / build["dockerfile"]).is_file()
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            assert (DEPLOY / source).exists(), f"{volume}: no such file"
