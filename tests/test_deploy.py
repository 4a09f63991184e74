"""docker-compose.yml, the Dockerfile and .dockerignore stay consistent with the code and safe.

`docker compose up` cannot run on these machines (no engine): the file is checked by
`docker compose config` where the compose plugin exists, and statically everywhere."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from contract.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
COMPOSE_TEXT = COMPOSE_FILE.read_text()
COMPOSE = yaml.safe_load(COMPOSE_TEXT)  # PyYAML resolves the x-* anchors and `<<:` merges
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
# The services built from this repository's Dockerfile run the app; the rest are images.
APP_SERVICES = sorted(name for name, s in SERVICES.items() if "build" in s)
WORKERS = sorted(name for name in SERVICES if name.startswith("worker"))
DOCKERFILE = (ROOT / "Dockerfile").read_text()
SECRETS = ("REDIS_PASSWORD", "POSTGRES_PASSWORD", "FLOWER_USER", "FLOWER_PASSWORD", "WEB_USER",
           "WEB_PASSWORD")  # fmt: skip
# A reference such as ${REDIS_PASSWORD} or ${REDIS_PASSWORD:?set it}: never a literal.
REF = r"\$\{[A-Z_][A-Z0-9_]*(?::?[-?][^}]*)?\}"
DURATION = re.compile(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


def argv(service: str) -> list[str]:
    """The service's entrypoint plus command, as one argv."""
    spec = SERVICES[service]
    words: list[str] = []
    for key in ("entrypoint", "command"):
        value = spec.get(key, [])
        words += value if isinstance(value, list) else re.findall(rf"(?:{REF}|\S)+", value)
    return words


def seconds(duration: str) -> int:
    match = DURATION.fullmatch(duration)
    assert match and any(match.groups()), f"not a duration: {duration!r}"
    hours, minutes, secs = (int(group or 0) for group in match.groups())
    return 3600 * hours + 60 * minutes + secs


def default_of(value: str) -> str:
    """The default in ``${VAR:-default}``, or the value itself."""
    match = re.fullmatch(r"\$\{[A-Z_][A-Z0-9_]*:-([^}]*)\}", value)
    return match.group(1) if match else value


def depends_on(service: str) -> dict[str, str]:
    return {name: spec["condition"] for name, spec in SERVICES[service]["depends_on"].items()}


def strings(node: Any) -> list[str]:
    """Every string value anywhere in a YAML tree."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for value in node.values() for s in strings(value)]
    if isinstance(node, list):
        return [s for value in node for s in strings(value)]
    return []


def compose(*args: str, env_file: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in SECRETS and not k.startswith("EXPLAINQ")}
    return subprocess.run(
        ["docker", "compose", "--env-file", str(env_file), "-f", str(COMPOSE_FILE), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


# --- docker compose config -------------------------------------------------------------


def test_docker_compose_config_accepts_the_file_and_demands_the_secrets(tmp_path):
    docker = shutil.which("docker")
    version = docker and subprocess.run(
        [docker, "compose", "version"], capture_output=True, text=True, timeout=60
    )
    if not version or version.returncode != 0:
        reason = (version.stderr.strip() or "failed").splitlines()[0] if version else "no CLI"
        pytest.skip(f"docker compose plugin not installed: {reason}")
    # --env-file: a developer's real .env must neither leak in nor satisfy the `:?` checks.
    dummy = tmp_path / "dummy.env"
    dummy.write_text("".join(f"{name}=dummy-{name.lower()}\n" for name in SECRETS))
    done = compose("--profile", "tools", "config", "--quiet", env_file=dummy)
    assert done.returncode == 0, done.stderr
    empty = tmp_path / "empty.env"
    empty.write_text("")
    refused = compose("--profile", "tools", "config", "--quiet", env_file=empty)
    assert refused.returncode != 0 and "PASSWORD" in refused.stderr, refused.stderr


# --- Redis and PostgreSQL ----------------------------------------------------------------


def test_only_flower_and_grafana_publish_a_port_and_only_on_loopback():
    for name in ("redis", "postgres", "prometheus", *WORKERS):
        assert "ports" not in SERVICES[name], f"{name} must not be published"
    for name, spec in SERVICES.items():
        assert spec.get("network_mode") != "host", name
        if name not in ("flower", "grafana"):
            assert "ports" not in spec, f"{name} publishes a port"
    assert SERVICES["flower"]["ports"] == ["127.0.0.1:5555:5555"]
    assert SERVICES["grafana"]["ports"] == ["127.0.0.1:3000:3000"]


def test_redis_requires_a_password_and_keeps_its_queue_on_disk():
    words = argv("redis")
    assert words[0] == "redis-server"
    flags = dict(zip(words[1::2], words[2::2], strict=True))
    assert re.fullmatch(r"\$\{REDIS_PASSWORD:\?[^}]*\}", flags["--requirepass"])
    assert flags["--appendonly"] == "yes"
    assert flags["--appendfsync"] == "everysec"
    assert flags["--maxmemory-policy"] == "noeviction"
    assert any(v.endswith(":/data") for v in SERVICES["redis"]["volumes"])
    assert SERVICES["redis"]["image"].startswith("redis:7")


def test_redis_and_postgres_have_healthchecks_volumes_and_restart():
    for name in ("redis", "postgres"):
        spec = SERVICES[name]
        assert spec["healthcheck"]["test"], name
        assert spec["volumes"] and spec["restart"] == "unless-stopped", name
        (named,) = (v.split(":")[0] for v in spec["volumes"])
        assert named in COMPOSE["volumes"], f"{name}: data on a named volume"
    # TCP, not the socket that the image's temporary init server answers on.
    probe = SERVICES["postgres"]["healthcheck"]["test"]
    assert probe[:2] == ["CMD", "pg_isready"] and "127.0.0.1" in probe
    assert "PONG" in " ".join(SERVICES["redis"]["healthcheck"]["test"])
    env = SERVICES["postgres"]["environment"]
    assert re.fullmatch(r"\$\{POSTGRES_PASSWORD:\?[^}]*\}", env["POSTGRES_PASSWORD"])
    assert SERVICES["postgres"]["image"].startswith("postgres:16")


# --- workers -------------------------------------------------------------------------------


def test_one_service_starts_a_pinned_worker_per_gpu_through_the_launcher():
    """No block per GPU: the launcher starts one worker per GPU the container sees (all
    of the host's: their indices are the host's, so WORKER_GPUS=0,2 means host GPUs 0
    and 2) and pins each with CUDA_VISIBLE_DEVICES itself."""
    assert WORKERS == ["workers"]
    spec = SERVICES["workers"]
    (device,) = spec["deploy"]["resources"]["reservations"]["devices"]
    assert device == {"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}
    # set here, it would override the launcher's view of the GPUs: one worker for all
    assert "CUDA_VISIBLE_DEVICES" not in spec["environment"]
    words = argv("workers")
    assert words[:5] == ["python", "-m", "workers.launch", "--gpus", "${WORKER_GPUS:-all}"]
    assert words[5] == "--"


def test_the_launcher_in_the_service_runs_one_task_at_a_time_per_gpu(monkeypatch):
    """What the service's command starts on a two-GPU host: `--dry-run` plans it."""
    from workers.launch import plan

    monkeypatch.setenv("EXPLAINQ_METRICS_PORT", "9808")
    celery_args = argv("workers")[6:]
    plans = plan(["0", "1"], "minilm-sentiment", "%h", celery_args, metrics_dir="/tmp/m")
    assert [p.env["CUDA_VISIBLE_DEVICES"] for p in plans] == ["0", "1"]
    for item in plans:
        assert item.argv[1:5] == ["-m", "celery", "-A", "workers"] and "worker" in item.argv
        assert "--concurrency=1" in item.argv and "--events" in item.argv
        assert "EXPLAINQ_METRICS_PORT" not in item.env  # the launcher serves them all


def test_workers_restart_and_shut_down_warm():
    timeout = int(default_of(SERVICES[WORKERS[0]]["environment"]["EXPLAINQ_VISIBILITY_TIMEOUT"]))
    for name in WORKERS:
        spec = SERVICES[name]
        assert spec["restart"] == "unless-stopped", name
        grace = seconds(spec["stop_grace_period"])
        assert 600 <= grace < timeout, f"{name}: stop_grace_period {grace}s"
        assert depends_on(name) == {
            "migrate": "service_completed_successfully",
            "redis": "service_healthy",
        }
        # the model by name, resolved under $EXPLAINQ_HOME/models of the image
        assert "./models:/var/lib/explainq/models:ro" in spec["volumes"], name
        assert "/" not in default_of(spec["environment"]["EXPLAINQ_MODEL"]), name
        assert "9808/metrics" in " ".join(spec["healthcheck"]["test"]), name


def test_worker_flags_are_celery_worker_options():
    from celery.bin.worker import worker

    known = {opt for param in worker.params for opt in param.opts}
    for name in WORKERS:
        for word in argv(name)[6:]:
            assert word.split("=", 1)[0] in known, f"{name}: unknown celery option {word}"


# --- one-shot services and Flower ----------------------------------------------------------


def test_migrate_runs_once_after_postgres_is_healthy():
    assert argv("migrate") == ["results", "migrate"]
    assert SERVICES["migrate"]["restart"] == "no"
    assert depends_on("migrate") == {"postgres": "service_healthy"}


def test_producer_and_results_are_tools_run_on_demand():
    assert argv("producer") == ["producer", "submit", "/data/docs.jsonl", "--wait"]
    assert argv("results") == ["results", "list"]
    for name in ("producer", "results"):
        assert SERVICES[name]["profiles"] == ["tools"], name
        assert depends_on(name)["migrate"] == "service_completed_successfully", name
    assert "./data:/data:ro" in SERVICES["producer"]["volumes"]
    assert depends_on("producer")["redis"] == "service_healthy"


def test_the_web_app_listens_on_the_network_only_with_credentials_and_a_healthcheck():
    assert argv("results-web") == ["results", "serve", "--host", "0.0.0.0", "--port", "8000"]
    env = SERVICES["results-web"]["environment"]
    for key, secret in (("EXPLAINQ_WEB_USER", "WEB_USER"), ("EXPLAINQ_WEB_PASSWORD",
                                                             "WEB_PASSWORD")):  # fmt: skip
        assert re.fullmatch(rf"\$\{{{secret}:\?[^}}]*\}}", env[key]), key
    probe = " ".join(SERVICES["results-web"]["healthcheck"]["test"])
    assert "127.0.0.1:8000/healthz" in probe
    assert depends_on("results-web") == {"migrate": "service_completed_successfully"}
    assert SERVICES["results-web"]["restart"] == "unless-stopped"
    from web.security import OPEN_PATHS

    assert "/healthz" in OPEN_PATHS  # the probe has no credentials


def test_flower_requires_basic_auth():
    words = argv("flower")
    assert words[:4] == ["celery", "-A", "workers", "flower"]
    assert "--port=5555" in words
    auths = [w.removeprefix("--basic-auth=") for w in words if w.startswith("--basic-auth=")]
    assert len(auths) == 1, "Flower without --basic-auth: its API can stop workers"
    (auth,) = auths
    assert re.fullmatch(r"\$\{FLOWER_USER:\?[^}]*\}:\$\{FLOWER_PASSWORD:\?[^}]*\}", auth)
    assert depends_on("flower") == {"redis": "service_healthy"}
    assert SERVICES["flower"]["restart"] == "unless-stopped"


def test_flower_options_exist():
    import flower.options  # noqa: F401  (defines Flower's options)
    import tornado.options

    for word in argv("flower")[4:]:
        option = word.removeprefix("--").split("=", 1)[0].replace("-", "_")
        assert option in tornado.options.options, f"unknown flower option {word}"


# --- the same settings everywhere ------------------------------------------------------------


def test_every_app_service_shares_the_same_settings():
    assert {"migrate", "flower", "producer", "results", *WORKERS} <= set(APP_SERVICES)
    shared = ("EXPLAINQ_BROKER_URL", "EXPLAINQ_DATABASE_URL", "EXPLAINQ_VISIBILITY_TIMEOUT")
    for key in (*shared, "EXPLAINQ_MODEL"):
        values = {SERVICES[name]["environment"].get(key) for name in APP_SERVICES}
        assert len(values) == 1 and None not in values, f"{key} differs: {values}"
    env = SERVICES["migrate"]["environment"]
    assert re.fullmatch(rf"redis://:{REF}@redis:6379/\d+", env["EXPLAINQ_BROKER_URL"])
    assert re.fullmatch(
        rf"postgresql\+psycopg://explainq:{REF}@postgres:5432/explainq",
        env["EXPLAINQ_DATABASE_URL"],
    )
    default = Settings.model_fields["visibility_timeout"].default
    assert int(default_of(env["EXPLAINQ_VISIBILITY_TIMEOUT"])) == default == 21600


def test_every_explainq_variable_is_a_setting():
    fields = {f"EXPLAINQ_{name.upper()}" for name in Settings.model_fields}
    for name in APP_SERVICES:
        for key in SERVICES[name]["environment"]:
            assert not key.startswith("EXPLAINQ_") or key in fields, f"{name}: unknown {key}"


def test_the_commands_exist_in_the_project():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["producer"] == "producer.cli:main"
    assert scripts["results"] == "results.cli:main"
    from producer.cli import app as producer_app
    from results.cli import app as results_app

    results = typer.main.get_command(results_app)
    producer = typer.main.get_command(producer_app)
    assert {"migrate", "list"} <= set(results.commands)
    submit = producer.commands["submit"]
    assert "--wait" in {opt for param in submit.params for opt in param.opts}

    from celery import Celery

    import workers

    assert isinstance(workers.app, Celery)  # what `celery -A workers` loads
    import flower  # noqa: F401  (`celery -A workers flower` needs it in the image)


# --- the image ---------------------------------------------------------------------------------


def instructions() -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", DOCKERFILE)
    lines = (line.strip() for line in joined.splitlines())
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def test_the_image_runs_as_a_non_root_user():
    steps = instructions()
    users = [arg for op, arg in steps if op == "USER"]
    assert users, "no USER: the image runs as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    assert user in ("10001", "explainq")
    assert any(op == "RUN" and "--uid 10001" in arg for op, arg in steps)


def test_the_image_installs_pinned_torch_before_the_project():
    steps = instructions()
    assert steps[0] == ("FROM", "python:3.11-slim")
    assert ("ARG", "TORCH_SPEC=torch==2.13.0") in steps
    runs = [arg for op, arg in steps if op == "RUN"]
    torch_step = next(i for i, arg in enumerate(runs) if "pip install ${TORCH_SPEC}" in arg)
    project_step = next(i for i, arg in enumerate(runs) if 'pip install ".[workers]"' in arg)
    assert torch_step < project_step
    env = " ".join(arg for op, arg in steps if op == "ENV")
    assert "HF_HUB_OFFLINE=1" in env and "EXPLAINQ_HOME=/var/lib/explainq" in env
    assert ("WORKDIR", "/app") in steps
    for op, arg in steps:
        if op in ("ENV", "ARG"):
            assert not re.search(r"PASSWORD|SECRET|TOKEN", arg, re.I), f"a secret in {op}"


def test_the_build_context_has_what_the_dockerfile_copies_and_nothing_secret():
    ignored = {
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".venv", ".git", ".env", "models", "bench/results", "**/__pycache__"} <= ignored
    assert {"**/*.db", ".pytest_cache", ".ruff_cache"} <= ignored
    for op, arg in instructions():
        if op == "COPY":
            for source in arg.split()[:-1]:
                assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
                assert source not in ignored, f"COPY {source}: excluded by .dockerignore"


# --- no secret committed -------------------------------------------------------------------


def test_no_secret_value_is_committed():
    in_url = re.compile(rf"://[^:@/\s]*:((?:{REF}|[^@\s])*)@")  # scheme://user:PASSWORD@
    urls = [password for s in strings(COMPOSE) for password in in_url.findall(s)]
    assert len(urls) >= 2  # the broker and the database
    for password in urls:
        assert re.fullmatch(REF, password), f"a literal password in a URL: {password}"
    for name, spec in SERVICES.items():
        for key, value in (spec.get("environment") or {}).items():
            if re.search(r"PASSWORD|SECRET|TOKEN|AUTH", key):
                assert re.fullmatch(REF, str(value)), f"{name}: literal {key}"
    # Every secret the file needs fails fast when unset, rather than becoming "".
    for name in SECRETS:
        assert re.search(rf"\$\{{{name}:\?", COMPOSE_TEXT), f"{name} is not required (:?)"
        assert not re.search(rf"\$\{{{name}(:?-[^}}]*)?\}}", COMPOSE_TEXT), f"{name} defaulted"

    example = dict(
        line.split("=", 1)
        for line in (ROOT / ".env.example").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    assert set(SECRETS) <= set(example)
    for name in ("REDIS_PASSWORD", "POSTGRES_PASSWORD", "FLOWER_PASSWORD"):
        assert example[name].startswith("change-me"), f".env.example: {name} not a placeholder"

    if (ROOT / ".git").exists() and shutil.which("git"):
        tracked = subprocess.run(
            ["git", "-C", str(ROOT), "ls-files", "--", ".env"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert not tracked.strip(), ".env is committed"


# --- monitoring: Prometheus, alert rules, Grafana ------------------------------------------

DEPLOY = ROOT / "deploy"
# Every metric workers/metrics.py defines (histograms add _bucket, _count and _sum).
METRICS = set(re.findall(r'"(explainq_\w+)"', (ROOT / "workers" / "metrics.py").read_text()))


def metric_names(expr: str) -> set[str]:
    return {re.sub(r"_(bucket|count|sum)$", "", name) for name in re.findall(r"explainq_\w+", expr)}


def test_monitoring_is_opt_in_and_its_files_are_in_the_repository():
    for name in ("prometheus", "grafana"):
        assert SERVICES[name]["profiles"] == ["monitoring"], name
        for volume in SERVICES[name]["volumes"]:
            source = volume.split(":")[0]
            assert not source.startswith(".") or (ROOT / source).exists(), f"{name}: {source}"
    assert "prometheus-data" in COMPOSE["volumes"]


def test_prometheus_scrapes_every_worker_on_its_metrics_port_and_flower():
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    (workers,) = jobs["explainq-workers"]["static_configs"]
    ports = {SERVICES[name]["environment"]["EXPLAINQ_METRICS_PORT"] for name in WORKERS}
    (port,) = ports
    assert sorted(workers["targets"]) == [f"{name}:{port}" for name in WORKERS]
    for name in WORKERS:  # reachable from the prometheus container, published nowhere
        assert SERVICES[name]["environment"]["EXPLAINQ_METRICS_HOST"] == "0.0.0.0"
    assert jobs["flower"]["static_configs"][0]["targets"] == ["flower:5555"]
    auth = jobs["flower"]["basic_auth"]
    entrypoint = " ".join(SERVICES["prometheus"]["entrypoint"])
    assert auth["username_file"] in entrypoint and auth["password_file"] in entrypoint
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]


def test_alert_rules_cover_the_issue_and_name_real_metrics():
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    (group,) = rules["groups"]
    alerts = {rule["alert"]: rule for rule in group["rules"]}
    assert set(alerts) == {"ExplainqWorkerDown", "ExplainqFailureRate", "ExplainqQueueOnlyGrows",
                           "ExplainqCompletenessGap"}  # fmt: skip
    for name, rule in alerts.items():
        assert seconds(rule["for"]) >= 300 and rule["annotations"]["summary"], name
        assert metric_names(rule["expr"]) <= METRICS, f"{name}: unknown metric"
        assert rule["expr"].count("(") == rule["expr"].count(")"), name
    assert 'up{job="explainq-workers"}' in alerts["ExplainqWorkerDown"]["expr"]
    assert {"explainq_documents_total"} == metric_names(alerts["ExplainqFailureRate"]["expr"])


def test_the_grafana_dashboard_shows_real_metrics_from_the_provisioned_source():
    import json

    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "explainq.json").read_text())
    source = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml").read_text()
    )["datasources"][0]
    assert source["url"] == "http://prometheus:9090"
    shown = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == source["uid"], panel["title"]
            shown |= metric_names(target["expr"])
    assert shown == METRICS  # every metric on some panel, and no other
