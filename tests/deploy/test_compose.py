"""Static checks of the docker compose stack: what docker-compose resolves, and what it points at.

There is no Docker engine in CI, so nothing is started here. Instead docker-compose itself
validates both files, and the resolved configuration is checked against the files in the
repository, TF Serving's config formats and the gateway's settings, so a renamed file, a moved
port or a model without a label map fails `make test` rather than `docker compose up`.
"""

from __future__ import annotations

import re
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import text_format

from tests.deploy import compose
from tests.deploy.compose import CPU_FILE, GPU_FILE, REPO_ROOT
from tests.deploy.serving_protos import batching_parameters_class
from tf_server.monitoring import MonitoringConfig
from web.jobs.config import ENV_NAMES as JOB_ENV_NAMES
from web.jobs.config import JobSettings
from web.serving.protos.tensorflow_serving.config import model_server_config_pb2
from web.settings import _PARSERS, Settings

STACKS = [GPU_FILE, CPU_FILE]
JOB_VARIABLES = set(JOB_ENV_NAMES.values())
WORKER_COMMAND = ["python", "-m", "web.worker"]
PINNED_REDIS_IMAGE = re.compile(r"^redis:\d+\.\d+\.\d+-alpine$")
REDIS_PORT = 6379
PINNED_SERVING_IMAGE = re.compile(r"^tensorflow/serving:(\d+\.\d+\.\d+)(-gpu)?$")
TF_SERVER_MOUNT = "/tf_server"


def services(file: str) -> dict[str, Any]:
    return compose.resolved(file)["services"]


def tf_server_flags(file: str = GPU_FILE) -> dict[str, str]:
    return compose.flags(services(file)["tf_server"]["command"])


def host_file(service: dict[str, Any], container_path: str) -> Path:
    path = compose.host_path(service, container_path)
    assert path is not None, f"{container_path} is not inside any bind mount of the service"
    return path


# --- docker-compose accepts both stacks --------------------------------------------------------


@pytest.mark.parametrize("file", STACKS)
def test_docker_compose_accepts_the_file(file: str) -> None:
    proc = compose.run_config(file, extra=("--quiet",))
    assert proc.returncode == 0, f"docker-compose rejected {file}:\n{proc.stderr}"
    assert set(services(file)) == {"tf_server", "web", "worker", "redis", "proxy"}


def test_gpu_stack_reserves_an_nvidia_gpu_for_tf_server() -> None:
    tf_server = services(GPU_FILE)["tf_server"]
    match = PINNED_SERVING_IMAGE.match(tf_server["image"])
    assert match and match.group(2) == "-gpu", f"expected a pinned GPU image, got {tf_server['image']}"
    devices = tf_server["deploy"]["resources"]["reservations"]["devices"]
    assert any(d.get("driver") == "nvidia" and "gpu" in d.get("capabilities", []) for d in devices)
    assert "deploy" not in services(GPU_FILE)["web"], "the gateway needs no GPU"


def test_cpu_stack_uses_the_cpu_image_of_the_same_release_and_no_gpu() -> None:
    gpu, cpu = services(GPU_FILE)["tf_server"], services(CPU_FILE)["tf_server"]
    cpu_match = PINNED_SERVING_IMAGE.match(cpu["image"])
    gpu_match = PINNED_SERVING_IMAGE.match(gpu["image"])
    assert cpu_match and not cpu_match.group(2), f"expected a pinned CPU image, got {cpu['image']}"
    assert gpu_match and cpu_match.group(1) == gpu_match.group(1), "both stacks must run the same release"
    assert "devices" not in str(cpu.get("deploy", {})), "the CPU stack must not reserve a GPU"


def test_cpu_stack_differs_from_the_gpu_stack_only_in_image_and_gpu_reservation() -> None:
    gpu, cpu = compose.resolved(GPU_FILE), compose.resolved(CPU_FILE)

    def strip(config: dict[str, Any]) -> dict[str, Any]:
        copy = {key: value for key, value in config.items() if key != "name"}  # v2 adds a project name
        tf_server = {k: v for k, v in copy["services"]["tf_server"].items() if k not in ("image", "deploy")}
        return {**copy, "services": {**copy["services"], "tf_server": tf_server}}

    assert strip(cpu) == strip(gpu)


def test_serving_image_tag_matches_the_pinned_serving_api() -> None:
    """One TF Serving release everywhere: the image and the tensorflow-serving-api the Makefile pins."""
    makefile = (REPO_ROOT / "Makefile").read_text()
    pinned = re.search(r"tensorflow-serving-api==(\d+\.\d+\.\d+)", makefile)
    assert pinned, "the Makefile no longer pins tensorflow-serving-api"
    match = PINNED_SERVING_IMAGE.match(services(GPU_FILE)["tf_server"]["image"])
    assert match and match.group(1) == pinned.group(1)


# --- tf_server: flags, and the files they name --------------------------------------------------


def test_tf_server_runs_with_the_model_config_batching_warmup_and_monitoring() -> None:
    tf_server = services(GPU_FILE)["tf_server"]
    found = tf_server_flags()
    assert tf_server["entrypoint"] in (["tensorflow_model_server"], "tensorflow_model_server")
    for flag in ("--model_config_file", "--batching_parameters_file", "--monitoring_config_file"):
        assert found.get(flag, "").startswith(TF_SERVER_MOUNT + "/"), (
            f"{flag} must name a file in ./tf_server"
        )
    assert int(found["--model_config_file_poll_wait_seconds"]) > 0, "config polling must be on"
    assert found["--enable_model_warmup"] == "true"
    assert found["--enable_batching"] == "true"
    assert 0.0 <= float(found["--per_process_gpu_memory_fraction"]) <= 1.0


def test_files_named_by_tf_server_flags_exist_in_the_repository() -> None:
    tf_server = services(GPU_FILE)["tf_server"]
    for flag in ("--model_config_file", "--batching_parameters_file", "--monitoring_config_file"):
        path = host_file(tf_server, tf_server_flags()[flag])
        assert path.is_file(), f"{flag} names {path}, which does not exist"
    assert tf_server["working_dir"] == TF_SERVER_MOUNT


def test_tf_server_ports_stay_inside_the_compose_network() -> None:
    config = compose.resolved(GPU_FILE)
    tf_server = config["services"]["tf_server"]
    assert not tf_server.get("ports"), "TF Serving must not be published to the host by default"
    exposed = {str(port) for port in tf_server.get("expose", [])}
    assert {tf_server_flags()["--port"], tf_server_flags()["--rest_api_port"]} <= exposed
    for network in tf_server["networks"]:
        assert config["networks"][network].get("internal") is True, f"{network} must be internal"
        attached = [name for name, svc in config["services"].items() if network in svc.get("networks", {})]
        assert sorted(attached) == ["redis", "tf_server", "web", "worker"], (
            f"only web, the job workers and their queue may share {network} with tf_server"
        )


def test_batching_parameters_file_is_a_valid_batching_parameters_text_proto() -> None:
    path = host_file(services(GPU_FILE)["tf_server"], tf_server_flags()["--batching_parameters_file"])
    params = text_format.Parse(path.read_text(), batching_parameters_class()())
    assert params.max_batch_size.value >= 1
    assert params.num_batch_threads.value >= 1
    assert params.max_enqueued_batches.value >= 1
    if params.allowed_batch_sizes:
        sizes = list(params.allowed_batch_sizes)
        assert sizes == sorted(sizes) and sizes[-1] == params.max_batch_size.value
    # The demo models take one picture of any size per call ([1, -1, -1, 3]); merging requests
    # would fail the whole batch, and padding would move normalized boxes.
    assert params.max_batch_size.value == 1 or not params.pad_variable_length_inputs


def test_monitoring_config_exposes_prometheus_metrics() -> None:
    path = host_file(services(GPU_FILE)["tf_server"], tf_server_flags()["--monitoring_config_file"])
    config = text_format.Parse(path.read_text(), MonitoringConfig())
    assert config.prometheus_config.enable
    assert config.prometheus_config.path.startswith("/")


# --- models.config and its container twin -------------------------------------------------------


def read_model_config(path: Path) -> model_server_config_pb2.ModelServerConfig:
    return text_format.Parse(path.read_text(), model_server_config_pb2.ModelServerConfig())


def test_container_model_config_lists_the_same_models_as_models_config() -> None:
    """models.docker.config = models.config with base paths made absolute for the containers."""
    tf_server = services(GPU_FILE)["tf_server"]
    docker_path = host_file(tf_server, tf_server_flags()["--model_config_file"])
    local_path = REPO_ROOT / "tf_server" / "models.config"
    local = {c.name: c for c in read_model_config(local_path).model_config_list.config}
    docker = {c.name: c for c in read_model_config(docker_path).model_config_list.config}
    assert docker.keys() == local.keys(), f"{docker_path.name} and models.config list different models"
    for name, config in docker.items():
        assert config.base_path.startswith("/"), f"TF Serving needs an absolute base_path for {name}"
        in_repo = host_file(tf_server, config.base_path).resolve()
        local_base = Path(local[name].base_path)
        expected = (local_base if local_base.is_absolute() else local_path.parent / local_base).resolve()
        assert in_repo == expected, f"{name}: {config.base_path} is not the folder models.config names"
        # Everything else (platform, version policy, labels) must agree too.
        same_but_path = model_server_config_pb2.ModelConfig()
        same_but_path.CopyFrom(local[name])
        same_but_path.base_path = config.base_path
        assert config == same_but_path, f"{name}: {docker_path.name} and models.config differ"


@pytest.mark.parametrize("file", ["models.config", "models.docker.config"])
def test_every_configured_model_has_a_version_folder_and_labels(file: str) -> None:
    config_path = REPO_ROOT / "tf_server" / file
    tf_server = services(GPU_FILE)["tf_server"]
    configs = read_model_config(config_path).model_config_list.config
    assert configs, f"{file} lists no models"
    for config in configs:
        base = Path(config.base_path)
        folder = host_file(tf_server, config.base_path) if base.is_absolute() else config_path.parent / base
        assert folder.is_dir(), f"{config.name}: model folder {folder} is missing"
        versions = [v for v in folder.iterdir() if v.is_dir() and v.name.isdigit()]
        assert versions, f"{config.name}: no numeric version folder under {folder}"
        assert any((v / "saved_model.pb").is_file() for v in versions), f"{config.name}: no saved_model.pb"
        labels = [folder / name for name in ("label_map.pbtxt", "labels.txt") if (folder / name).is_file()]
        assert labels and labels[0].stat().st_size > 0, f"{config.name}: no label_map.pbtxt or labels.txt"


# --- web: files, ports, addresses, settings -----------------------------------------------------


def test_web_is_built_from_the_repository_dockerfile() -> None:
    build = services(GPU_FILE)["web"]["build"]
    context = Path(build["context"])
    assert context.resolve() == REPO_ROOT
    assert (context / build.get("dockerfile", "Dockerfile")).is_file()
    assert (context / ".dockerignore").is_file()


def test_every_bind_mount_source_exists() -> None:
    for file in STACKS:
        mounted = {}
        for name, service in services(file).items():
            mounted[name] = compose.bind_mounts(service)
            for source, target, _ in mounted[name]:
                assert source.exists(), f"{file}: {name} mounts {source} at {target}, which does not exist"
        # not a loop over nothing: the model folder reaches both TF Serving and the gateway
        models = (REPO_ROOT / "tf_server").resolve()
        assert any(source.resolve() == models for source, _, _ in mounted["tf_server"]), mounted
        assert mounted["web"], mounted


def test_web_mounts_models_read_only_and_keeps_uploads_and_results_in_volumes() -> None:
    config = compose.resolved(GPU_FILE)
    web = config["services"]["web"]
    env = compose.environment(web)
    models = host_file(web, env["MODELS_DIR"])
    assert models.resolve() == (REPO_ROOT / "tf_server" / "models").resolve()
    assert all(read_only for _, _, read_only in compose.bind_mounts(web)), "web mounts must be read-only"
    volumes = compose.named_volumes(web)
    for var in ("UPLOAD_FOLDER", "OUTPUT_FOLDER"):
        assert env[var] in volumes, f"{var}={env[var]} must be a volume"
        assert volumes[env[var]] in config["volumes"]


def test_web_reads_the_same_model_config_as_tf_server() -> None:
    web, tf_server = services(GPU_FILE)["web"], services(GPU_FILE)["tf_server"]
    web_config = host_file(web, compose.environment(web)["MODEL_CONFIG_FILE"])
    assert web_config.resolve() == host_file(tf_server, tf_server_flags()["--model_config_file"]).resolve()


def test_web_environment_is_accepted_by_the_gateway_settings() -> None:
    env = compose.environment(services(GPU_FILE)["web"])
    gunicorn_only = {"WEB_CONCURRENCY", "GUNICORN_CMD_ARGS"}
    unknown = set(env) - set(_PARSERS) - JOB_VARIABLES - gunicorn_only
    assert not unknown, f"web sets variables the gateway does not read: {sorted(unknown)}"
    declared = set(services(GPU_FILE)["web"].get("environment", {}) or {})
    assert set(_PARSERS) - gunicorn_only <= declared | set(env), "every gateway setting should be settable"
    Settings.load(environ=env)  # raises SettingsError naming the variable on a bad value


def test_gateway_reaches_tf_server_by_service_name_and_grpc_port() -> None:
    config = compose.resolved(GPU_FILE)
    settings = Settings.load(environ=compose.environment(config["services"]["web"]))
    host, _, port = settings.tf_serving_address.rpartition(":")
    assert host == "tf_server" and host in config["services"]
    assert port == tf_server_flags()["--port"]
    # The gateway's default (no environment) points at the same port on localhost, as `make run` uses.
    assert Settings().tf_serving_address.rpartition(":")[2] == tf_server_flags()["--port"]


def test_web_port_agrees_between_compose_dockerfile_healthcheck_and_proxy() -> None:
    config = services(GPU_FILE)
    web, proxy = config["web"], config["proxy"]
    dockerfile = (REPO_ROOT / "Dockerfile").read_text()
    bind = re.search(r"--bind=[\d.]+:(\d+)", dockerfile)
    assert bind, "the Dockerfile's gunicorn settings must bind a port"
    port = int(bind.group(1))
    assert str(port) in {str(p) for p in web.get("expose", [])}
    assert re.search(rf"^EXPOSE {port}$", dockerfile, re.MULTILINE)
    health = " ".join(web["healthcheck"]["test"])
    assert f"127.0.0.1:{port}/readyz" in health
    assert compose.environment(proxy)["GATEWAY_UPSTREAM"] == f"web:{port}"


@pytest.mark.parametrize("file", STACKS)
def test_only_the_buffering_proxy_is_published(file: str) -> None:
    config = services(file)
    published = {name: compose.published_ports(svc) for name, svc in config.items() if svc.get("ports")}
    assert list(published) == ["proxy"], f"only nginx may face clients, not {sorted(published)}"
    template = (REPO_ROOT / "deploy" / "nginx" / "templates" / "gateway.conf.template").read_text()
    listen = re.search(r"^\s*listen (\d+);", template, re.MULTILINE)
    assert listen and published["proxy"] == [(5000, int(listen.group(1)))]
    proxy = config["proxy"]
    assert re.fullmatch(r"nginx:\d+\.\d+\.\d+-alpine", proxy["image"]), "pin the nginx image"
    assert host_file(proxy, "/etc/nginx/templates") == REPO_ROOT / "deploy" / "nginx" / "templates"
    assert proxy["depends_on"]["web"]["condition"] == "service_healthy"
    assert compose.environment(config["web"])["TRUSTED_PROXIES"] == "1"


def test_the_proxy_admits_what_the_gateway_admits() -> None:
    body = compose.environment(services(GPU_FILE)["proxy"])["CLIENT_MAX_BODY_SIZE"]
    assert body.endswith("m") and int(body[:-1]) * 1024 * 1024 > Settings().max_content_length


def test_web_starts_after_a_healthy_tf_server() -> None:
    for file in STACKS:
        config = services(file)
        depends = config["web"]["depends_on"]
        assert "tf_server" in depends
        if isinstance(depends, dict):
            assert depends["tf_server"]["condition"] == "service_healthy"
        assert config["tf_server"]["healthcheck"]["test"], "tf_server needs a healthcheck to be waited for"
        assert "/dev/tcp/127.0.0.1/8501" in " ".join(config["tf_server"]["healthcheck"]["test"])


def test_the_tf_server_healthcheck_wants_an_answer_not_an_open_port(tmp_path: Path) -> None:
    """The healthcheck command itself, run against the local model server (same REST API, same
    monitoring config): it passes while the server answers, and fails once the process hangs with its
    ports open (SIGSTOP), which a TCP connect alone would not notice."""
    import os
    import signal
    import subprocess

    from tests.support.model_server import free_port, model_server_process

    service = services(GPU_FILE)["tf_server"]
    kind, *command = service["healthcheck"]["test"]
    timeout_s = float(service["healthcheck"]["timeout"].rstrip("s"))
    assert kind == "CMD" and command[:2] == ["bash", "-c"]
    monitoring = host_file(service, tf_server_flags()["--monitoring_config_file"])
    rest = free_port()

    def check() -> int:
        script = command[2].replace("/dev/tcp/127.0.0.1/8501", f"/dev/tcp/127.0.0.1/{rest}")
        try:
            return subprocess.run(["bash", "-c", script], timeout=timeout_s, capture_output=True).returncode
        except subprocess.TimeoutExpired:
            return -1  # Docker counts a check that outlives its timeout as failed

    with model_server_process(
        f"--model_config_file={REPO_ROOT / 'tf_server' / 'models.config'}",
        f"--rest_api_port={rest}",
        f"--monitoring_config_file={monitoring}",
        log_dir=tmp_path,
    ) as server:
        for _ in range(50):  # the REST port opens right after the gRPC one
            if check() == 0:
                break
        assert check() == 0, server.log()[-2000:]
        os.kill(server.process.pid, signal.SIGSTOP)
        try:
            assert check() != 0
        finally:
            os.kill(server.process.pid, signal.SIGCONT)
        assert check() == 0


# --- the job system: redis and the workers -----------------------------------------------------


def dockerfile_user_ids() -> str:
    text = (REPO_ROOT / "Dockerfile").read_text()
    uid = re.search(r"useradd\b.*?--uid (\d+)", text, re.DOTALL)
    gid = re.search(r"groupadd\b.*?--gid (\d+)", text, re.DOTALL)
    assert uid and gid and re.search(r"^USER app$", text, re.MULTILINE), "the Dockerfile's non-root user"
    return f"{uid.group(1)}:{gid.group(1)}"


def dockerfile_app_folders() -> set[str]:
    """Folders under WORKDIR that the Dockerfile creates and hands to the `app` user."""
    text = re.sub(r"\\\n", " ", (REPO_ROOT / "Dockerfile").read_text())
    workdir = re.search(r"^WORKDIR (\S+)$", text, re.MULTILINE)
    assert workdir, "the Dockerfile sets a WORKDIR"
    found: set[str] = set()
    for chown in re.findall(r"chown app:app ([^&\n]+)", text):
        for folder in chown.split():
            found.add(folder if folder.startswith("/") else f"{workdir.group(1).rstrip('/')}/{folder}")
    return found


@pytest.mark.parametrize("file", STACKS)
def test_redis_is_the_pinned_official_image_on_the_internal_network_only(file: str) -> None:
    config = compose.resolved(file)
    redis = config["services"]["redis"]
    assert PINNED_REDIS_IMAGE.match(redis["image"]), f"pin redis:X.Y.Z-alpine, not {redis['image']}"
    assert not redis.get("ports"), "Redis has no password: it must never be published"
    assert str(REDIS_PORT) in {str(port) for port in redis.get("expose", [])}
    assert list(redis["networks"]) == ["backend"] and config["networks"]["backend"]["internal"] is True
    health = " ".join(redis["healthcheck"]["test"])
    assert "redis-cli ping" in health and "PONG" in health
    assert redis["restart"] == "unless-stopped"
    # The decision the file explains: a queue of chunk ids that reclaim rebuilds needs no persistence.
    command = redis["command"]
    assert command[0] == "redis-server"
    assert command[command.index("--save") + 1] == "" and command[command.index("--appendonly") + 1] == "no"
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction", "never drop queued chunks"
    assert not compose.named_volumes(redis) and not compose.bind_mounts(redis)
    assert redis["user"] != "root" and not redis["user"].startswith("0")


@pytest.mark.parametrize("file", STACKS)
def test_worker_runs_the_web_image_as_its_non_root_user_with_the_worker_command(file: str) -> None:
    config = services(file)
    worker, web = config["worker"], config["web"]
    assert worker["command"] == WORKER_COMMAND
    assert worker["image"] == web["image"] and worker["build"] == web["build"], "the gateway's own image"
    assert worker["user"] == dockerfile_user_ids()
    assert worker["restart"] == "unless-stopped"
    for dependency in ("tf_server", "redis"):
        assert worker["depends_on"][dependency]["condition"] == "service_healthy", dependency
    assert web["depends_on"]["redis"]["condition"] == "service_healthy"
    assert list(worker["networks"]) == ["backend"], "a worker needs TF Serving and Redis, nothing else"
    assert not worker.get("ports") and not worker.get("expose"), "a worker serves no HTTP"
    assert int(worker["deploy"]["replicas"]) >= 1
    # Longer than the worker's own graceful stop, so running chunks can end before SIGKILL.
    grace = float(worker["stop_grace_period"].rstrip("s"))
    assert grace > JobSettings.from_env(compose.environment(worker)).shutdown_timeout_s


@pytest.mark.parametrize("file", STACKS)
def test_web_and_worker_share_the_jobs_volume_and_the_redis_queue(file: str) -> None:
    config = compose.resolved(file)
    web, worker = config["services"]["web"], config["services"]["worker"]
    web_env, worker_env = compose.environment(web), compose.environment(worker)
    folder = web_env["JOBS_FOLDER"]
    assert worker_env["JOBS_FOLDER"] == folder, "gateway and workers must see the same JOBS_FOLDER"
    web_volumes, worker_volumes = compose.named_volumes(web), compose.named_volumes(worker)
    assert folder in web_volumes and worker_volumes.get(folder) == web_volumes[folder]
    assert web_volumes[folder] in config["volumes"]
    assert web_volumes[folder] not in {web_volumes[web_env[v]] for v in ("UPLOAD_FOLDER", "OUTPUT_FOLDER")}
    queue = worker_env["JOB_QUEUE_URL"]
    assert web_env["JOB_QUEUE_URL"] == queue, "gateway and workers must use the same queue"
    parts = urllib.parse.urlsplit(queue)
    assert parts.scheme == "redis" and parts.hostname == "redis" and parts.hostname in config["services"]
    exposed = {str(p) for p in config["services"]["redis"]["expose"]}
    assert parts.port == REDIS_PORT and str(parts.port) in exposed
    for env in (web_env, worker_env):
        jobs = Settings.load(environ=env).jobs  # what the gateway and web.worker read
        assert (str(jobs.jobs_folder), jobs.queue_url) == (folder, queue)


def test_the_jobs_volume_is_a_folder_the_image_gives_to_its_user() -> None:
    """A named volume starts as a copy of the image's folder at its mount point, owner included; with
    no such folder it is root's, and the gateway and workers (uid 10001) could not write jobs."""
    owned = dockerfile_app_folders()
    for name in ("web", "worker"):
        for target in compose.named_volumes(services(GPU_FILE)[name]):
            assert target in owned, (
                f"{name} mounts a volume at {target}: the Dockerfile must create it and chown it to app "
                f"(it hands over {sorted(owned)})"
            )


def test_worker_reads_the_models_and_settings_the_gateway_reads() -> None:
    config = services(GPU_FILE)
    web, worker = config["web"], config["worker"]
    web_env, worker_env = compose.environment(web), compose.environment(worker)
    for var in ("TF_SERVING_ADDRESS", "MODEL_CONFIG_FILE", "MODELS_DIR"):
        assert worker_env[var] == web_env[var], f"{var} differs between web and worker"
    assert host_file(worker, worker_env["MODELS_DIR"]) == host_file(web, web_env["MODELS_DIR"])
    assert host_file(worker, worker_env["MODEL_CONFIG_FILE"]).is_file()
    assert compose.bind_mounts(worker) and all(read_only for _, _, read_only in compose.bind_mounts(worker))
    # The worker runs the gateway's pipeline: every picture setting the gateway takes, it takes too.
    picture_settings = {"MAX_IMAGE_PIXELS", "MAX_INPUT_SIDE", "MAX_DECODE_PIXELS_IN_FLIGHT", "GRPC_TIMEOUT_S"}
    assert picture_settings <= set(worker.get("environment", {}))
    unknown = set(worker_env) - set(_PARSERS) - JOB_VARIABLES - {"PROMETHEUS_MULTIPROC_DIR"}
    assert not unknown, f"worker sets variables nothing reads: {sorted(unknown)}"
    Settings.load(environ=worker_env)


def test_the_worker_writes_its_metric_files_to_a_folder_that_exists_in_the_image() -> None:
    """The Dockerfile's PROMETHEUS_MULTIPROC_DIR is gunicorn's (gunicorn.conf.py creates it); a worker
    inherits it, and prometheus-client fails on a folder that is not there."""
    env = compose.environment(services(GPU_FILE)["worker"])
    assert env["PROMETHEUS_MULTIPROC_DIR"] == "/tmp", "a folder every image has, writable by anyone"


def test_the_proxy_lets_job_uploads_through_and_fills_every_template_variable() -> None:
    env = compose.environment(services(GPU_FILE)["proxy"])
    body = env["JOB_CLIENT_MAX_BODY_SIZE"]
    assert body.endswith("m") and int(body[:-1]) * 1024 * 1024 > Settings().max_job_upload_bytes
    assert int(env["CLIENT_MAX_BODY_SIZE"][:-1]) < int(body[:-1])
    template = (REPO_ROOT / "deploy" / "nginx" / "templates" / "gateway.conf.template").read_text()
    # The image's envsubst leaves a variable it is not given as it is, which nginx then refuses.
    used = set(re.findall(r"\$\{(\w+)\}", template))
    assert used and used <= set(env), f"the proxy service does not set {sorted(used - set(env))}"
