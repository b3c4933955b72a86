"""Static checks of the Kubernetes manifests (deploy/k8s): rendered offline, validated, cross-checked.

No cluster, no kubectl, no network. tests/support/kustomize.py renders base/ and both overlays the
way `kustomize build` does; every object is validated against the Kubernetes API's schemas
(kubernetes-validate, strict: an unknown or misspelt field fails), and the result is checked
against what it must agree with: the compose files (images, TF Serving's flags), the Dockerfile
(user, port, the paths gunicorn writes), the gateway's settings (every variable it is given),
tf_server/ (models, batching, monitoring) and itself (ports, labels, selectors). Where kubectl is
installed, the renderer is also compared with `kubectl kustomize`.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
import shutil
import subprocess
import time
import urllib.parse
from functools import cache
from pathlib import Path, PurePosixPath
from typing import Any

import kubernetes_validate
import pytest
import yaml
from google.protobuf import text_format

from tests.deploy import compose
from tests.deploy.compose import CPU_FILE, GPU_FILE, REPO_ROOT
from tests.deploy.serving_protos import batching_parameters_class
from tests.support import kustomize
from tf_server.monitoring import MonitoringConfig
from web.jobs.config import ENV_NAMES as JOB_ENV_NAMES
from web.jobs.queue import make_huey
from web.serving.protos.tensorflow_serving.config import model_server_config_pb2
from web.settings import _PARSERS, Settings

K8S = REPO_ROOT / "deploy" / "k8s"
BUILDS = ("base", "overlays/gpu", "overlays/cpu")
# Each overlay and the compose file it stands for.
OVERLAYS = {"overlays/gpu": GPU_FILE, "overlays/cpu": CPU_FILE}
TOOLS = sorted((K8S / "tools").glob("*.yaml"))
# Schemas bundled with the pinned kubernetes-validate (requirements/test.txt): a floor for clusters
# that lag upstream (managed ones in extended support), and the newest it knows.
KUBERNETES_VERSIONS = ("1.33.0", "1.37.0")
GPU_RESOURCE = "nvidia.com/gpu"
SECRET_SETTINGS = {"SECRET_KEY", "API_KEYS", "METRICS_TOKEN"}
GUNICORN_VARIABLES = {"WEB_CONCURRENCY", "GUNICORN_CMD_ARGS"}  # read by gunicorn itself
TF_SERVING_FILE_FLAGS = ("--model_config_file", "--batching_parameters_file", "--monitoring_config_file")
# TF Serving flags the cluster adds to compose's: connections that end now and then, so that clients
# look the headless Service up again and find pods added since (one server in compose, no need).
K8S_ONLY_FLAGS = {"--grpc_channel_arguments": "grpc.max_connection_age_ms="}
SERVICE_DOMAIN = "svc.cluster.local"
JOB_VARIABLES = set(JOB_ENV_NAMES.values())
EXTRAS = K8S / "extras"


# --- rendering ------------------------------------------------------------------------------------


@cache
def _rendered(build: str) -> tuple[dict[str, Any], ...]:
    return tuple(kustomize.build(K8S / build))


def rendered(build: str) -> list[dict[str, Any]]:
    """The objects of a build (a fresh copy: tests may not change each other's data)."""
    return copy.deepcopy(list(_rendered(build)))


def one(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [obj for obj in objects if obj["kind"] == kind and obj["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [obj for obj in objects if obj["kind"] == kind]


def pod_spec(deployment: dict[str, Any]) -> dict[str, Any]:
    return deployment["spec"]["template"]["spec"]


def container(deployment: dict[str, Any], name: str) -> dict[str, Any]:
    found = [c for c in pod_spec(deployment)["containers"] if c["name"] == name]
    assert len(found) == 1, f"{deployment['metadata']['name']} has no single container {name}"
    return found[0]


def tf_serving(build: str = "overlays/gpu") -> tuple[dict[str, Any], dict[str, Any]]:
    deployment = one(rendered(build), "Deployment", "tf-serving")
    return deployment, container(deployment, "tf-serving")


def gateway(build: str = "overlays/gpu") -> tuple[dict[str, Any], dict[str, Any]]:
    deployment = one(rendered(build), "Deployment", "gateway")
    return deployment, container(deployment, "gateway")


def plain_env(c: dict[str, Any]) -> dict[str, str]:
    """A container's variables with literal values (those from Secrets are left out)."""
    return {item["name"]: item["value"] for item in c.get("env", []) if "value" in item}


def container_port(c: dict[str, Any], port: int | str) -> int:
    """A port number, or a named port resolved against the container's ports."""
    if isinstance(port, int):
        return port
    named = [p["containerPort"] for p in c.get("ports", []) if p.get("name") == port]
    assert named, f"container {c['name']} has no port named {port}"
    return named[0]


def mount_of(deployment: dict[str, Any], c: dict[str, Any], path: str) -> tuple[dict, dict] | None:
    """The (volumeMount, volume) a path of the container lives on, longest mountPath first."""
    target = PurePosixPath(path)
    best = None
    for mount in c.get("volumeMounts", []):
        root = PurePosixPath(mount["mountPath"])
        if (target == root or root in target.parents) and (best is None or len(root.parts) > best[0]):
            best = (len(root.parts), mount)
    if best is None:
        return None
    volumes = {v["name"]: v for v in pod_spec(deployment).get("volumes", [])}
    assert best[1]["name"] in volumes, f"mount {best[1]['name']} names no volume"
    return best[1], volumes[best[1]["name"]]


def config_map_file(objects: list[dict[str, Any]], deployment: dict, c: dict, path: str) -> tuple[str, str]:
    """(ConfigMap name, key) that a file path of the container is mounted from."""
    found = mount_of(deployment, c, path)
    assert found and "configMap" in found[1], f"{path} is not on a ConfigMap volume"
    mount, volume = found
    assert "subPath" not in mount, "subPath mounts of a ConfigMap never see its updates"
    assert "items" not in volume["configMap"], "keep the whole ConfigMap as the folder"
    key = str(PurePosixPath(path).relative_to(mount["mountPath"]))
    name = volume["configMap"]["name"]
    assert key in one(objects, "ConfigMap", name)["data"], f"ConfigMap {name} has no key {key}"
    return name, key


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(key) == value for key, value in selector.items())


def pods_selected(objects: list[dict[str, Any]], selector: dict[str, str]) -> list[str]:
    return [
        d["metadata"]["name"]
        for d in of_kind(objects, "Deployment")
        if selects(selector, d["spec"]["template"]["metadata"]["labels"])
    ]


# --- what the manifests must agree with -----------------------------------------------------------


def _interpolate(value: Any) -> Any:
    """Compose's ${VAR:-default} with every variable unset (the committed defaults)."""
    if isinstance(value, str):
        return re.sub(r"\$\{[A-Z_]+(?::?-([^}]*))?\}", lambda m: m.group(1) or "", value)
    if isinstance(value, dict):
        return {key: _interpolate(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_interpolate(item) for item in value]
    return value


@cache
def compose_services(file: str) -> dict[str, Any]:
    """A compose file's services as written, defaults filled in (docker-compose itself is not needed)."""
    return _interpolate(yaml.safe_load((REPO_ROOT / file).read_text()))["services"]


@cache
def dockerfile_env() -> dict[str, str]:
    """The Dockerfile's ENV defaults (the image's environment before the Deployment's)."""
    text = re.sub(r"\\\n", " ", (REPO_ROOT / "Dockerfile").read_text())
    env: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            for item in shlex.split(line[4:]):
                key, _, value = item.partition("=")
                env[key] = value
    return env


def dockerfile_user() -> tuple[int, int]:
    text = (REPO_ROOT / "Dockerfile").read_text()
    uid = re.search(r"useradd\b.*?--uid (\d+)", text, re.DOTALL)
    gid = re.search(r"groupadd\b.*?--gid (\d+)", text, re.DOTALL)
    assert uid and gid and re.search(r"^USER app$", text, re.MULTILINE), "the Dockerfile's non-root user"
    return int(uid.group(1)), int(gid.group(1))


def gunicorn_conf_variables() -> set[str]:
    text = (REPO_ROOT / "gunicorn.conf.py").read_text()
    return set(re.findall(r"os\.environ(?:\.get\(|\[)\s*[\"']([A-Z_]+)[\"']", text))


def gunicorn_args(env: dict[str, str]) -> dict[str, str]:
    return compose.flags(shlex.split(env.get("GUNICORN_CMD_ARGS", "")))


def read_model_config(text: str) -> model_server_config_pb2.ModelServerConfig:
    return text_format.Parse(text, model_server_config_pb2.ModelServerConfig())


# --- kustomize and the API schemas -----------------------------------------------------------------


@pytest.mark.parametrize("build", BUILDS)
def test_each_kustomization_renders_the_whole_stack(build: str) -> None:
    kinds = sorted({obj["kind"] for obj in rendered(build)})
    assert kinds == sorted(
        [
            "ConfigMap",
            "Deployment",
            "HorizontalPodAutoscaler",
            "Ingress",
            "Namespace",
            "NetworkPolicy",
            "PersistentVolumeClaim",
            "PodDisruptionBudget",
            "Service",
            "ServiceAccount",
        ]
    )
    assert {d["metadata"]["name"] for d in of_kind(rendered(build), "Deployment")} == {
        "tf-serving",
        "gateway",
        "worker",
        "redis",
    }


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_is_valid_against_the_kubernetes_api_schema(version: str) -> None:
    documents = [(build, obj) for build in BUILDS for obj in rendered(build)]
    for path in TOOLS:
        documents += [(path.name, doc) for doc in yaml.safe_load_all(path.read_text()) if doc]
    seen: set[str] = set()
    for where, obj in documents:
        key = json.dumps(obj, sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(
                f"{where}: {obj['kind']} {obj['metadata']['name']} is invalid for {version}: {exc.message}"
            )


@pytest.mark.parametrize("build", BUILDS)
def test_the_renderer_agrees_with_kubectl_kustomize(build: str) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed: the offline renderer alone is checked")
    proc = subprocess.run(
        [kubectl, "kustomize", str(K8S / build)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, f"kubectl kustomize {build} failed:\n{proc.stderr}"
    theirs = [doc for doc in yaml.safe_load_all(proc.stdout) if doc]
    ours = rendered(build)
    assert [kustomize.object_id(o) for o in ours] == [kustomize.object_id(o) for o in theirs]
    for mine, real in zip(ours, theirs, strict=True):
        assert mine == real, f"{build}: {kustomize.object_id(mine)} differs from kubectl kustomize"


def test_the_renderer_refuses_what_it_does_not_implement(tmp_path: Path) -> None:
    (tmp_path / "cm.txt").write_text("x")
    cases = {
        "commonLabels: {a: b}\n": "commonLabels",
        "configMapGenerator: [{name: c, files: [cm.txt]}]\n": "disableNameSuffixHash",
        "labels: [{pairs: {a: b}, includeSelectors: true}]\n": "includeSelectors",
        "resources: [https://github.com/example/base]\n": "remote",
    }
    for text, message in cases.items():
        (tmp_path / "kustomization.yaml").write_text(text)
        with pytest.raises(kustomize.KustomizeError, match=message):
            kustomize.build(tmp_path)


# --- labels, selectors, namespace -----------------------------------------------------------------


@pytest.mark.parametrize("build", BUILDS)
def test_every_object_is_labelled_and_in_the_stacks_namespace(build: str) -> None:
    objects = rendered(build)
    [namespace] = of_kind(objects, "Namespace")
    name = namespace["metadata"]["name"]
    for obj in objects:
        labels = obj["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/part-of") == "tf-detection-gateway", kustomize.object_id(obj)
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == name, kustomize.object_id(obj)
        if obj["kind"] not in ("Namespace", "ConfigMap"):
            assert {"app.kubernetes.io/name", "app.kubernetes.io/component"} <= set(labels), (
                kustomize.object_id(obj)
            )
    for deployment in of_kind(objects, "Deployment"):
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert pod_labels["app.kubernetes.io/part-of"] == "tf-detection-gateway"
    for tool in TOOLS:
        for doc in yaml.safe_load_all(tool.read_text()):
            assert doc["metadata"]["namespace"] == name, f"{tool.name} must target the stack's namespace"


@pytest.mark.parametrize("build", BUILDS)
def test_selectors_match_their_own_pods_and_no_others(build: str) -> None:
    objects = rendered(build)
    for deployment in of_kind(objects, "Deployment"):
        name = deployment["metadata"]["name"]
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert set(deployment["spec"]["selector"]) == {"matchLabels"}
        assert pods_selected(objects, selector) == [name], f"{name}'s selector must match its pods only"
        for spread in pod_spec(deployment).get("topologySpreadConstraints", []):
            assert spread["labelSelector"]["matchLabels"] == selector
    for service in of_kind(objects, "Service"):
        assert len(pods_selected(objects, service["spec"]["selector"])) == 1, service["metadata"]["name"]
    for budget in of_kind(objects, "PodDisruptionBudget"):
        assert pods_selected(objects, budget["spec"]["selector"]["matchLabels"]) == [
            budget["metadata"]["name"]
        ]
    assert {b["metadata"]["name"] for b in of_kind(objects, "PodDisruptionBudget")} == {
        "tf-serving",
        "gateway",
        "worker",
        "redis",
    }
    for deployment in of_kind(objects, "Deployment"):
        account = pod_spec(deployment)["serviceAccountName"]
        one(objects, "ServiceAccount", account)
        assert pod_spec(deployment)["automountServiceAccountToken"] is False


# --- TF Serving -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("build", "file"), OVERLAYS.items())
def test_tf_serving_runs_the_compose_image(build: str, file: str) -> None:
    _, c = tf_serving(build)
    assert c["image"] == compose_services(file)["tf_server"]["image"]
    assert re.fullmatch(r"tensorflow/serving:\d+\.\d+\.\d+(-gpu)?", c["image"]), "pin the official image"


@pytest.mark.parametrize(("build", "file"), OVERLAYS.items())
def test_tf_serving_flags_are_the_compose_flags_with_files_from_the_config_map(build: str, file: str) -> None:
    objects = rendered(build)
    deployment, c = tf_serving(build)
    service = compose_services(file)["tf_server"]
    assert c["command"] == service["entrypoint"] == ["tensorflow_model_server"]
    ours, theirs = compose.flags(c["args"]), compose.flags(service["command"])
    assert set(ours) == set(theirs) | set(K8S_ONLY_FLAGS)
    for flag, setting in K8S_ONLY_FLAGS.items():
        assert setting in ours[flag], f"{flag} must set {setting}"
    for flag, value in theirs.items():
        if flag in TF_SERVING_FILE_FLAGS:
            config_map_file(objects, deployment, c, ours[flag])
        else:
            assert ours[flag] == value, f"{flag}: {ours[flag]} here, {value} in {file}"


def test_tf_serving_service_is_headless_with_the_grpc_and_rest_ports() -> None:
    objects = rendered("overlays/gpu")
    service = one(objects, "Service", "tf-serving")
    deployment, c = tf_serving()
    flags = compose.flags(c["args"])
    assert service["spec"]["clusterIP"] == "None", "clients balance over pods: the Service must be headless"
    ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert set(ports) == {"grpc", "http"}
    assert (
        ports["grpc"]["port"]
        == container_port(c, ports["grpc"]["targetPort"])
        == int(flags["--port"])
        == 8500
    )
    assert ports["http"]["port"] == container_port(c, ports["http"]["targetPort"]) == 8501
    assert int(flags["--rest_api_port"]) == 8501
    assert pods_selected(objects, service["spec"]["selector"]) == ["tf-serving"]


def test_tf_serving_probes_its_grpc_port_and_wants_an_answer_for_liveness() -> None:
    _, c = tf_serving()
    flags = compose.flags(c["args"])
    for probe in ("startupProbe", "readinessProbe"):
        assert container_port(c, c[probe]["tcpSocket"]["port"]) == int(flags["--port"])
    live = c["livenessProbe"]["httpGet"]
    assert container_port(c, live["port"]) == int(flags["--rest_api_port"])
    config = (REPO_ROOT / "deploy" / "k8s" / "base" / "config" / "monitoring.config").read_text()
    prometheus = text_format.Parse(config, MonitoringConfig()).prometheus_config
    assert prometheus.enable and prometheus.path == live["path"]  # the page the config opens
    startup = c["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300, "model loading takes minutes"


def test_gpu_overlay_asks_for_one_nvidia_gpu_and_the_cpu_overlay_for_none() -> None:
    _, gpu = tf_serving("overlays/gpu")
    assert gpu["resources"]["limits"][GPU_RESOURCE] in (1, "1")
    assert gpu["image"].endswith("-gpu")
    _, gateway_container = gateway("overlays/gpu")
    assert GPU_RESOURCE not in json.dumps(gateway_container), "the gateway needs no GPU"
    for build in ("base", "overlays/cpu"):
        _, cpu = tf_serving(build)
        assert GPU_RESOURCE not in json.dumps(rendered(build)), f"{build} must not ask for a GPU"
        assert not cpu["image"].endswith("-gpu")


def test_network_policy_lets_only_gateway_and_worker_pods_reach_tf_serving() -> None:
    objects = rendered("overlays/gpu")
    policy = one(objects, "NetworkPolicy", "tf-serving")
    spec = policy["spec"]
    assert pods_selected(objects, spec["podSelector"]["matchLabels"]) == ["tf-serving"]
    assert "Ingress" in spec["policyTypes"]
    _, c = tf_serving()
    grpc_port = int(compose.flags(c["args"])["--port"])
    rules = spec["ingress"]
    assert rules, "an empty ingress list would still admit nothing; this one must admit the gateway"
    for rule in rules:
        ports = {container_port(c, p["port"]) for p in rule.get("ports", [])}
        assert ports, "every rule names its ports"
        for peer in rule["from"]:
            assert "ipBlock" not in peer
            if "podSelector" in peer:
                assert "namespaceSelector" not in peer, "gateway and worker pods of this namespace only"
                assert pods_selected(objects, peer["podSelector"]["matchLabels"]) in (["gateway"], ["worker"])
            else:  # monitoring: the REST port (metrics) only, never gRPC
                assert set(peer) == {"namespaceSelector"} and grpc_port not in ports
                assert ports == {8501}
    assert any(
        grpc_port in {container_port(c, p["port"]) for p in rule["ports"]}
        and all("podSelector" in peer for peer in rule["from"])
        for rule in rules
    ), "the gateway must be allowed on the gRPC port"
    grpc_peers = [
        pods_selected(objects, peer["podSelector"]["matchLabels"])
        for rule in rules
        if grpc_port in {container_port(c, p["port"]) for p in rule["ports"]}
        for peer in rule["from"]
    ]
    assert sorted(grpc_peers) == [["gateway"], ["worker"]], "job workers call TF Serving too"


# --- models and TF Serving's config files --------------------------------------------------------


def test_config_map_model_config_lists_the_same_models_as_models_docker_config() -> None:
    objects = rendered("overlays/gpu")
    deployment, c = tf_serving()
    name, key = config_map_file(objects, deployment, c, compose.flags(c["args"])["--model_config_file"])
    ours = {
        m.name: m
        for m in read_model_config(one(objects, "ConfigMap", name)["data"][key]).model_config_list.config
    }
    docker_file = REPO_ROOT / "tf_server" / "models.docker.config"
    docker = {m.name: m for m in read_model_config(docker_file.read_text()).model_config_list.config}
    assert ours.keys() == docker.keys(), (
        "the ConfigMap's models.config and models.docker.config list other models"
    )
    models_mount, models_volume = mount_of(deployment, c, ours[next(iter(ours))].base_path) or (None, None)
    assert models_volume and "persistentVolumeClaim" in models_volume, "models live on the models volume"
    for model, config in ours.items():
        mount, volume = mount_of(deployment, c, config.base_path) or (None, None)
        assert volume == models_volume and mount["readOnly"] is True, f"{model}: {config.base_path}"
        # Same folder below the models root as in the compose stack (/tf_server/models/<...>).
        relative = PurePosixPath(config.base_path).relative_to(mount["mountPath"])
        assert PurePosixPath(docker[model].base_path).relative_to("/tf_server/models") == relative
        same_but_path = model_server_config_pb2.ModelConfig()
        same_but_path.CopyFrom(docker[model])
        same_but_path.base_path = config.base_path
        assert config == same_but_path, (
            f"{model}: versions, policy or labels differ from models.docker.config"
        )


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        ("--batching_parameters_file", batching_parameters_class()),
        ("--monitoring_config_file", MonitoringConfig),
    ],
)
def test_config_map_batching_and_monitoring_say_what_tf_server_files_say(flag: str, message: Any) -> None:
    objects = rendered("overlays/gpu")
    deployment, c = tf_serving()
    name, key = config_map_file(objects, deployment, c, compose.flags(c["args"])[flag])
    ours = text_format.Parse(one(objects, "ConfigMap", name)["data"][key], message())
    theirs = text_format.Parse((REPO_ROOT / "tf_server" / key).read_text(), message())
    assert ours == theirs, f"deploy/k8s/base/config/{key} and tf_server/{key} differ"


def test_gateway_reads_the_model_config_and_models_tf_serving_reads() -> None:
    objects = rendered("overlays/gpu")
    tf_deployment, tf_container = tf_serving()
    gw_deployment, gw_container = gateway()
    env = plain_env(gw_container)
    tf_config = compose.flags(tf_container["args"])["--model_config_file"]
    assert config_map_file(objects, gw_deployment, gw_container, env["MODEL_CONFIG_FILE"]) == config_map_file(
        objects, tf_deployment, tf_container, tf_config
    )
    # Label maps are found beside each base_path: the same volume at the same place in both pods.
    name, key = config_map_file(objects, tf_deployment, tf_container, tf_config)
    for config in read_model_config(one(objects, "ConfigMap", name)["data"][key]).model_config_list.config:
        tf_mount = mount_of(tf_deployment, tf_container, config.base_path)
        gw_mount = mount_of(gw_deployment, gw_container, config.base_path)
        assert tf_mount and gw_mount and tf_mount[1] == gw_mount[1] and tf_mount[0] == gw_mount[0]
    assert mount_of(gw_deployment, gw_container, env["MODELS_DIR"])[1]["name"] == "models"


# --- the gateway ----------------------------------------------------------------------------------


def test_gateway_dials_every_tf_serving_pod_through_the_headless_service() -> None:
    objects = rendered("overlays/gpu")
    _, c = gateway()
    settings = Settings.load(environ=plain_env(c))
    scheme, _, target = settings.tf_serving_address.partition(":///")
    assert scheme == "dns", "dns:/// makes each worker resolve every pod and balance over them"
    host, _, port = target.rpartition(":")
    service = one(objects, "Service", "tf-serving")
    assert host == f"{service['metadata']['name']}.{service['metadata']['namespace']}.{SERVICE_DOMAIN}"
    grpc = [p["port"] for p in service["spec"]["ports"] if p["name"] == "grpc"]
    assert grpc == [int(port)]


def test_gateway_image_is_the_compose_web_image_with_a_pinned_tag() -> None:
    web_image = compose_services(GPU_FILE)["web"]["image"]
    placeholder = kustomize.split_image(web_image)[0]
    base = one(rendered("base"), "Deployment", "gateway")
    assert container(base, "gateway")["image"] == placeholder, "the overlays' images: entries replace it"
    images = set()
    for build in OVERLAYS:
        name, tag, _ = kustomize.split_image(gateway(build)[1]["image"])
        assert name.rpartition("/")[2] == placeholder and tag and tag != "latest", f"{build}: pin a tag"
        images.add((name, tag))
    assert len(images) == 1, "both overlays deploy the same gateway image"


def test_gateway_port_is_gunicorns_and_the_services_and_the_ingress_backend() -> None:
    objects = rendered("overlays/gpu")
    _, c = gateway()
    env = {**dockerfile_env(), **plain_env(c)}
    bind = gunicorn_args(env)["--bind"]
    port = int(bind.rpartition(":")[2])
    assert [p["containerPort"] for p in c["ports"]] == [port]
    service = one(objects, "Service", "gateway")
    assert service["spec"]["type"] == "ClusterIP"
    assert pods_selected(objects, service["spec"]["selector"]) == ["gateway"]
    [service_port] = service["spec"]["ports"]
    assert container_port(c, service_port["targetPort"]) == port
    ingresses = of_kind(objects, "Ingress")
    assert {i["metadata"]["name"] for i in ingresses} == {"gateway", "gateway-jobs"}
    backends = [
        path["backend"]["service"]
        for ingress in ingresses
        for rule in ingress["spec"]["rules"]
        for path in rule["http"]["paths"]
    ]
    assert backends
    for backend in backends:
        assert backend["name"] == "gateway"
        assert backend["port"].get("name", service_port["name"]) == service_port["name"]
        assert backend["port"].get("number", service_port["port"]) == service_port["port"]


def test_gateway_probes_hit_healthz_and_readyz() -> None:
    _, c = gateway()
    port = int(gunicorn_args({**dockerfile_env(), **plain_env(c)})["--bind"].rpartition(":")[2])
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("livenessProbe", "readinessProbe"):
        assert container_port(c, c[probe]["httpGet"]["port"]) == port


def test_gateway_environment_is_read_by_the_gateway_or_gunicorn() -> None:
    _, c = gateway()
    names = [item["name"] for item in c["env"]]
    assert len(names) == len(set(names)), "a variable is set twice"
    known = set(_PARSERS) | JOB_VARIABLES | GUNICORN_VARIABLES | gunicorn_conf_variables()
    assert not set(names) - known, f"the gateway reads none of {sorted(set(names) - known)}"
    secret = {item["name"]: item["valueFrom"]["secretKeyRef"] for item in c["env"] if "valueFrom" in item}
    assert set(secret) == SECRET_SETTINGS, "keys and tokens come from the Secret, never as literal values"
    assert len({ref["name"] for ref in secret.values()}) == 1
    for var, ref in secret.items():
        assert ref["key"] == var and ref["optional"] is True, f"{var}: optional key {var} of the Secret"
    env = plain_env(c)
    assert env["TRUSTED_PROXIES"] == "1", "one proxy in front: the Ingress controller"
    Settings.load(environ=env)  # raises SettingsError naming the variable on a bad value
    Settings.load(environ={**env, "SECRET_KEY": "s" * 32, "API_KEYS": "key-a,key-b", "METRICS_TOKEN": "m"})


def test_gateway_runs_as_the_dockerfiles_non_root_user_with_a_read_only_root() -> None:
    deployment, c = gateway()
    uid, gid = dockerfile_user()
    pod = pod_spec(deployment)["securityContext"]
    own = c["securityContext"]
    assert pod["runAsNonRoot"] is True and pod["runAsUser"] == uid and pod["runAsGroup"] == gid
    assert pod["seccompProfile"]["type"] == "RuntimeDefault"
    assert own["readOnlyRootFilesystem"] is True
    assert own["allowPrivilegeEscalation"] is False
    assert own["capabilities"]["drop"] == ["ALL"] and not own["capabilities"].get("add")
    assert "privileged" not in own and "runAsUser" not in own


def test_every_path_the_gateway_writes_is_a_writable_volume() -> None:
    deployment, c = gateway()
    env = {**dockerfile_env(), **plain_env(c)}
    writes = {
        "UPLOAD_FOLDER": env["UPLOAD_FOLDER"],
        "OUTPUT_FOLDER": env["OUTPUT_FOLDER"],
        # gunicorn.conf.py empties and fills it; prometheus-client writes a file per worker.
        "PROMETHEUS_MULTIPROC_DIR": env["PROMETHEUS_MULTIPROC_DIR"],
        # gunicorn's worker heartbeat files.
        "--worker-tmp-dir": gunicorn_args(env).get("--worker-tmp-dir", env.get("TMPDIR", "/tmp")),
        # tempfile: werkzeug spools large request bodies to disk.
        "TMPDIR": env.get("TMPDIR", "/tmp"),
    }
    for what, path in writes.items():
        found = mount_of(deployment, c, path)
        assert found, f"{what}={path} is on the read-only root filesystem"
        mount, volume = found
        assert not mount.get("readOnly"), f"{what}={path} is on a read-only mount"
        assert {"emptyDir", "persistentVolumeClaim"} & set(volume), f"{what}: {volume}"
    for path in (env["UPLOAD_FOLDER"], env["OUTPUT_FOLDER"]):
        assert mount_of(deployment, c, path)[1]["persistentVolumeClaim"]["claimName"] == "gateway-results"
    for mount in c["volumeMounts"]:
        volume = {v["name"]: v for v in pod_spec(deployment)["volumes"]}[mount["name"]]
        if "configMap" in volume or volume.get("persistentVolumeClaim", {}).get("claimName") == "models":
            assert mount.get("readOnly") is True, f"{mount['mountPath']} must be read-only"


def test_results_volume_is_read_write_many_and_shared_by_every_replica() -> None:
    objects = rendered("overlays/gpu")
    claim = one(objects, "PersistentVolumeClaim", "gateway-results")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"], "every replica mounts it, on any node"
    models = one(objects, "PersistentVolumeClaim", "models")
    assert set(models["spec"]["accessModes"]) <= {"ReadWriteMany", "ReadOnlyMany"}
    deployment, _ = gateway()
    claims = {
        v["persistentVolumeClaim"]["claimName"]
        for v in pod_spec(deployment)["volumes"]
        if "persistentVolumeClaim" in v
    }
    assert claims == {"gateway-results", "models", "jobs"}
    assert deployment["spec"]["replicas"] >= 2


def test_gateway_scales_on_cpu_and_keeps_two_replicas() -> None:
    objects = rendered("overlays/gpu")
    autoscaler = one(objects, "HorizontalPodAutoscaler", "gateway")
    assert autoscaler["apiVersion"] == "autoscaling/v2"
    target = autoscaler["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == ("apps/v1", "Deployment", "gateway")
    assert autoscaler["spec"]["minReplicas"] >= 2
    assert autoscaler["spec"]["maxReplicas"] > autoscaler["spec"]["minReplicas"]
    [metric] = autoscaler["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu" and metric["resource"]["target"]["type"] == "Utilization"
    _, c = gateway()
    assert c["resources"]["requests"]["cpu"], "utilisation is measured against the CPU request"


@pytest.mark.parametrize("build", OVERLAYS)
def test_every_pod_is_restricted_and_has_requests_a_memory_limit_and_probes(build: str) -> None:
    deployments = of_kind(rendered(build), "Deployment")
    names = {d["metadata"]["name"] for d in deployments}
    assert {"gateway", "tf-serving"} <= names, names  # not a loop over nothing
    for deployment in deployments:
        assert pod_spec(deployment)["containers"], deployment["metadata"]["name"]
        # Pod Security "restricted": non-root, RuntimeDefault seccomp, no escalation, no capabilities.
        pod = pod_spec(deployment)["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] > 0
        assert pod["seccompProfile"]["type"] == "RuntimeDefault"
        for c in pod_spec(deployment)["containers"]:
            assert {"cpu", "memory"} <= set(c["resources"]["requests"]), c["name"]
            assert "memory" in c["resources"]["limits"], c["name"]
            assert "readinessProbe" in c and "livenessProbe" in c, c["name"]
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
            assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]


# --- the way in -----------------------------------------------------------------------------------


def test_ingress_buffers_and_limits_like_the_compose_nginx() -> None:
    ingress = one(rendered("overlays/gpu"), "Ingress", "gateway")
    notes = ingress["metadata"]["annotations"]
    prefix = "nginx.ingress.kubernetes.io/"
    body = compose_services(GPU_FILE)["proxy"]["environment"]["CLIENT_MAX_BODY_SIZE"]
    assert notes[prefix + "proxy-body-size"] == body
    assert int(body.removesuffix("m")) * 1024 * 1024 > Settings().max_content_length
    assert notes[prefix + "proxy-request-buffering"] == "on"
    assert notes[prefix + "proxy-buffering"] == "on"
    template = (REPO_ROOT / "deploy" / "nginx" / "templates" / "gateway.conf.template").read_text()
    for name in ("connect", "send", "read"):
        timeout = re.search(rf"^\s*proxy_{name}_timeout (\d+)s;", template, re.MULTILINE)
        assert timeout and notes[f"{prefix}proxy-{name}-timeout"] == timeout.group(1), name
    buffer = re.search(r"^\s*client_body_buffer_size (\S+);", template, re.MULTILINE)
    assert buffer and notes[prefix + "client-body-buffer-size"] == buffer.group(1)
    assert ingress["spec"]["ingressClassName"] == "nginx"


# --- the job system: workers, Redis, the jobs claim ---------------------------------------------------


def worker(build: str = "overlays/gpu") -> tuple[dict[str, Any], dict[str, Any]]:
    deployment = one(rendered(build), "Deployment", "worker")
    return deployment, container(deployment, "worker")


def redis(build: str = "overlays/gpu") -> tuple[dict[str, Any], dict[str, Any]]:
    deployment = one(rendered(build), "Deployment", "redis")
    return deployment, container(deployment, "redis")


def nginx_job_location() -> tuple[re.Pattern[str], str]:
    """The compose nginx's job-upload location: its path regex and its body."""
    template = (REPO_ROOT / "deploy" / "nginx" / "templates" / "gateway.conf.template").read_text()
    match = re.search(r"^\s*location ~ (\S+) \{\n(.*?)^\s*\}", template, re.MULTILINE | re.DOTALL)
    assert match, "the nginx template has no regex location for job uploads"
    return re.compile(match.group(1)), match.group(2)


@pytest.mark.parametrize(("build", "file"), OVERLAYS.items())
def test_worker_runs_the_gateway_image_with_the_compose_worker_command(build: str, file: str) -> None:
    deployment, c = worker(build)
    gw_deployment, gw = gateway(build)
    assert c["image"] == gw["image"], "workers run the gateway's image"
    assert c["command"] == compose_services(file)["worker"]["command"] == ["python", "-m", "web.worker"]
    assert "args" not in c
    assert pod_spec(deployment)["securityContext"] == pod_spec(gw_deployment)["securityContext"]
    assert c["securityContext"] == gw["securityContext"]
    assert not c.get("ports"), "a worker serves no HTTP"
    # SIGTERM lets running chunks end within JOB_SHUTDOWN_TIMEOUT_S before the kubelet's SIGKILL.
    settings = Settings.load(environ=plain_env(c))
    assert pod_spec(deployment)["terminationGracePeriodSeconds"] > settings.jobs.shutdown_timeout_s
    assert c["resources"]["requests"]["cpu"], "the autoscaler measures against the CPU request"


def test_worker_reads_the_models_config_and_queue_the_gateway_reads() -> None:
    objects = rendered("overlays/gpu")
    deployment, c = worker()
    gw_deployment, gw = gateway()
    env, gw_env = plain_env(c), plain_env(gw)
    for var in ("TF_SERVING_ADDRESS", "MODEL_CONFIG_FILE", "MODELS_DIR", "JOBS_FOLDER", "JOB_QUEUE_URL"):
        assert env[var] == gw_env[var], f"{var} differs between the gateway and the workers"
    assert config_map_file(objects, deployment, c, env["MODEL_CONFIG_FILE"]) == config_map_file(
        objects, gw_deployment, gw, gw_env["MODEL_CONFIG_FILE"]
    )
    models_mount, models_volume = mount_of(deployment, c, env["MODELS_DIR"])
    assert models_mount["readOnly"] is True
    assert models_volume["persistentVolumeClaim"]["claimName"] == "models"
    # JOBS_FOLDER: the one jobs claim, writable, at the same place in both.
    for d, cont in ((deployment, c), (gw_deployment, gw)):
        mount, volume = mount_of(d, cont, env["JOBS_FOLDER"])
        assert volume["persistentVolumeClaim"]["claimName"] == "jobs" and not mount.get("readOnly")
    names = [item["name"] for item in c["env"]]
    assert len(names) == len(set(names))
    unknown = set(names) - set(_PARSERS) - JOB_VARIABLES - {"PROMETHEUS_MULTIPROC_DIR"}
    assert not unknown, f"the worker reads none of {sorted(unknown)}"
    assert not any("valueFrom" in item for item in c["env"]), "the in-process predictor needs no keys"


def test_every_path_the_worker_writes_is_a_writable_volume() -> None:
    deployment, c = worker()
    env = {**dockerfile_env(), **plain_env(c)}
    for what in ("JOBS_FOLDER", "PROMETHEUS_MULTIPROC_DIR"):
        found = mount_of(deployment, c, env[what])
        assert found and not found[0].get("readOnly"), f"{what}={env[what]} is not on a writable volume"
        assert {"emptyDir", "persistentVolumeClaim"} & set(found[1])
    # The Dockerfile's value is gunicorn's folder, which only gunicorn.conf.py creates.
    assert env["PROMETHEUS_MULTIPROC_DIR"] != dockerfile_env()["PROMETHEUS_MULTIPROC_DIR"]


def test_gateway_streams_job_uploads_into_the_jobs_claim() -> None:
    deployment, c = gateway()
    env = plain_env(c)
    mount, volume = mount_of(deployment, c, env["JOBS_FOLDER"])
    assert volume["persistentVolumeClaim"]["claimName"] == "jobs" and not mount.get("readOnly")


def test_the_queue_url_names_the_redis_service() -> None:
    objects = rendered("overlays/gpu")
    _, c = worker()
    url = urllib.parse.urlsplit(plain_env(c)["JOB_QUEUE_URL"])
    service = one(objects, "Service", "redis")
    assert url.scheme == "redis" and url.path == "/0"
    name, namespace = service["metadata"]["name"], service["metadata"]["namespace"]
    assert url.hostname == f"{name}.{namespace}.{SERVICE_DOMAIN}"
    [port] = service["spec"]["ports"]
    assert url.port == port["port"] == 6379
    _, redis_container = redis()
    assert container_port(redis_container, port["targetPort"]) == 6379
    assert pods_selected(objects, service["spec"]["selector"]) == ["redis"]


def test_worker_liveness_probe_is_the_compose_healthcheck() -> None:
    _, c = worker()
    probe = c["livenessProbe"]["exec"]["command"]
    for file in OVERLAYS.values():
        kind, *command = compose_services(file)["worker"]["healthcheck"]["test"]
        assert kind == "CMD" and command == probe
    assert "exec" in c["readinessProbe"], "no HTTP in a worker: probes run commands"


def test_the_worker_probe_fails_for_a_stopped_process() -> None:
    """The liveness command, pointed at a real process instead of PID 1: passes while it runs, fails
    while it is stopped (SIGSTOP), passes again after SIGCONT."""
    import os
    import signal
    import sys

    _, c = worker()
    command = c["livenessProbe"]["exec"]["command"]
    assert command[0] == "python" and "/proc/1/stat" in command[2]
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        script = command[2].replace("/proc/1/stat", f"/proc/{process.pid}/stat")

        def probe() -> int:
            return subprocess.run([sys.executable, "-c", script], timeout=30).returncode

        assert probe() == 0
        os.kill(process.pid, signal.SIGSTOP)
        try:
            deadline = time.monotonic() + 10
            while probe() == 0:
                assert time.monotonic() < deadline, "the probe still passed for a stopped process"
                time.sleep(0.05)
        finally:
            os.kill(process.pid, signal.SIGCONT)
        assert probe() == 0
    finally:
        process.kill()
        process.wait(10)


@pytest.mark.parametrize(("build", "file"), OVERLAYS.items())
def test_redis_runs_the_compose_image_and_flags_as_its_own_user(build: str, file: str) -> None:
    deployment, c = redis(build)
    service = compose_services(file)["redis"]
    assert c["image"] == service["image"]
    assert re.fullmatch(r"redis:\d+\.\d+\.\d+-alpine", c["image"]), "pin the official image"
    assert c["args"] == service["command"] and "command" not in c, "the image's entrypoint, compose's flags"
    pod = pod_spec(deployment)["securityContext"]
    assert f"{pod['runAsUser']}:{pod['runAsGroup']}" == service["user"]
    assert deployment["spec"]["replicas"] == 1 and deployment["spec"]["strategy"]["type"] == "Recreate"
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    data = mount_of(deployment, c, "/data")
    assert data and "emptyDir" in data[1], "no persistence: a scratch folder, not a claim"
    for probe in ("readinessProbe", "livenessProbe"):
        assert "redis-cli ping" in " ".join(c[probe]["exec"]["command"]), probe


def test_network_policy_lets_only_gateway_and_worker_pods_reach_redis() -> None:
    objects = rendered("overlays/gpu")
    policy = one(objects, "NetworkPolicy", "redis")
    spec = policy["spec"]
    assert pods_selected(objects, spec["podSelector"]["matchLabels"]) == ["redis"]
    assert spec["policyTypes"] == ["Ingress"]
    [rule] = spec["ingress"]
    assert [p["port"] for p in rule["ports"]] == [6379]
    peers = []
    for peer in rule["from"]:
        assert set(peer) == {"podSelector"}, "pods of this namespace only"
        peers += pods_selected(objects, peer["podSelector"]["matchLabels"])
    assert sorted(peers) == ["gateway", "worker"]


def test_jobs_claim_is_read_write_many_and_holds_the_disk_budget() -> None:
    objects = rendered("overlays/gpu")
    claim = one(objects, "PersistentVolumeClaim", "jobs")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"], "gateways and workers mount it on any node"
    size = claim["spec"]["resources"]["requests"]["storage"]
    assert size.endswith("Gi")
    settings = Settings()
    assert int(size[:-2]) * 1024**3 >= settings.jobs_disk_budget_bytes + settings.max_job_upload_bytes
    using = [
        d["metadata"]["name"]
        for d in of_kind(objects, "Deployment")
        if any(v.get("persistentVolumeClaim", {}).get("claimName") == "jobs" for v in pod_spec(d)["volumes"])
    ]
    assert sorted(using) == ["gateway", "worker"]


def test_worker_scales_on_cpu_from_one_replica() -> None:
    objects = rendered("overlays/gpu")
    autoscaler = one(objects, "HorizontalPodAutoscaler", "worker")
    target = autoscaler["spec"]["scaleTargetRef"]
    assert (target["apiVersion"], target["kind"], target["name"]) == ("apps/v1", "Deployment", "worker")
    assert autoscaler["spec"]["minReplicas"] >= 1
    assert autoscaler["spec"]["maxReplicas"] > autoscaler["spec"]["minReplicas"]
    [metric] = autoscaler["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu" and metric["resource"]["target"]["type"] == "Utilization"


def test_the_job_upload_ingress_admits_large_bodies_on_the_upload_paths_only() -> None:
    objects = rendered("overlays/gpu")
    jobs = one(objects, "Ingress", "gateway-jobs")
    paths = [path for rule in jobs["spec"]["rules"] for path in rule["http"]["paths"]]
    assert {p["pathType"] for p in paths} == {"Exact"}, "only the upload paths, nothing below them"
    regex, body = nginx_job_location()
    assert sorted(p["path"] for p in paths) == ["/api/v1/jobs", "/jobs"]
    for path in paths:
        assert regex.search(path["path"]), f"the compose nginx does not stream {path['path']}"
    for other in ("/api/v1/jobs/abc/cancel", "/jobs/abc", "/api/v1/models/shapes/predict", "/"):
        assert not regex.search(other), f"the compose nginx's job location also takes {other}"
    notes = jobs["metadata"]["annotations"]
    prefix = "nginx.ingress.kubernetes.io/"
    body_size = compose_services(GPU_FILE)["proxy"]["environment"]["JOB_CLIENT_MAX_BODY_SIZE"]
    assert notes[prefix + "proxy-body-size"] == body_size
    assert int(body_size.removesuffix("m")) * 1024 * 1024 > Settings().max_job_upload_bytes
    assert notes[prefix + "proxy-request-buffering"] == "off" and "proxy_request_buffering off;" in body
    for name in ("connect", "send", "read"):
        timeout = re.search(rf"^\s*proxy_{name}_timeout (\d+)s;", body, re.MULTILINE)
        assert timeout and notes[f"{prefix}proxy-{name}-timeout"] == timeout.group(1), name
    assert jobs["spec"]["ingressClassName"] == one(objects, "Ingress", "gateway")["spec"]["ingressClassName"]
    # Everything else keeps the 17m cap and buffering of the main Ingress.
    main = one(objects, "Ingress", "gateway")
    assert [p["path"] for rule in main["spec"]["rules"] for p in rule["http"]["paths"]] == ["/"]
    assert main["metadata"]["annotations"][prefix + "proxy-request-buffering"] == "on"


# --- extras: KEDA scaling on the queue's length ------------------------------------------------------


def extras(name: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((EXTRAS / name).read_text()) if doc]


def test_the_keda_scaled_object_reads_hueys_queue_on_the_redis_service(tmp_path: Path) -> None:
    objects = rendered("overlays/gpu")
    docs = extras("worker-keda-scaledobject.yaml")
    scaled = [d for d in docs if d["kind"] == "ScaledObject"]
    assert len(scaled) == 1 and scaled[0]["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled[0]["spec"]
    namespace = one(objects, "Namespace", "tf-detection-gateway")["metadata"]["name"]
    assert all(d["metadata"]["namespace"] == namespace for d in docs)
    target = spec["scaleTargetRef"]
    one(objects, "Deployment", target["name"])
    assert (target.get("apiVersion"), target.get("kind")) == ("apps/v1", "Deployment")
    assert target["name"] == "worker"
    assert spec["minReplicaCount"] >= 1, "a running worker also reclaims lost chunks: never scale to zero"
    [trigger] = spec["triggers"]
    assert trigger["type"] == "redis"
    meta = trigger["metadata"]
    _, c = worker()
    url = urllib.parse.urlsplit(plain_env(c)["JOB_QUEUE_URL"])
    assert meta["address"] == f"{url.hostname}:{url.port}"
    assert meta["databaseIndex"] == url.path.strip("/")
    # The list Huey keeps waiting tasks in, as web.jobs.queue builds it (no connection is made here).
    huey = make_huey(plain_env(c)["JOB_QUEUE_URL"], tmp_path)
    assert meta["listName"] == huey.storage.queue_key
    assert int(meta["listLength"]) >= 1
    # Optional: never applied by the kustomization.
    kustomization = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    assert not any("extras" in str(r) for r in kustomization["resources"])
    assert not of_kind(objects, "ScaledObject")


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_the_keda_network_policy_is_valid_and_opens_the_redis_port_only(version: str) -> None:
    objects = rendered("overlays/gpu")
    [policy] = [d for d in extras("worker-keda-scaledobject.yaml") if d["kind"] == "NetworkPolicy"]
    kubernetes_validate.validate(policy, version, strict=True)
    spec = policy["spec"]
    assert pods_selected(objects, spec["podSelector"]["matchLabels"]) == ["redis"]
    [rule] = spec["ingress"]
    assert [p["port"] for p in rule["ports"]] == [6379]
    assert [set(peer) for peer in rule["from"]] == [{"namespaceSelector"}]
