"""docker-compose.yml and the Dockerfile stay consistent with the code and safe.

`docker compose up` cannot run on these machines (no engine); the file is validated by
`docker compose config` where the compose plugin exists, and statically everywhere."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
APP_SERVICES = [name for name, s in SERVICES.items() if s.get("image") == "explainq:latest"]
WORKERS = [name for name in SERVICES if name.startswith("worker-")]
DUMMY_ENV = {
    "REDIS_PASSWORD": "x",
    "POSTGRES_PASSWORD": "y",
    "FLOWER_USER": "u",
    "FLOWER_PASSWORD": "p",
}


def command(service: str) -> str:
    value = SERVICES[service]["command"]
    return " ".join(value) if isinstance(value, list) else value


def test_docker_compose_config_accepts_the_file():
    plugin = shutil.which("docker") and subprocess.run(
        ["docker", "compose", "version"], capture_output=True
    )
    if not plugin or plugin.returncode != 0:
        pytest.skip("docker compose plugin not installed: static checks only")
    done = subprocess.run(
        ["docker", "compose", "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
        env={**DUMMY_ENV, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr


def test_redis_and_postgres_publish_no_port_and_redis_needs_a_password():
    assert "ports" not in SERVICES["redis"] and "ports" not in SERVICES["postgres"]
    redis = command("redis")
    assert "--requirepass ${REDIS_PASSWORD:?" in redis
    assert "--appendonly yes" in redis and "--maxmemory-policy noeviction" in redis
    assert SERVICES["flower"]["ports"] == ["127.0.0.1:5555:5555"]


def test_each_worker_reserves_exactly_its_own_gpu():
    assert len(WORKERS) >= 2
    for name in WORKERS:
        (device,) = SERVICES[name]["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
        (gpu,) = device["device_ids"]
        assert SERVICES[name]["environment"]["CUDA_VISIBLE_DEVICES"] == gpu
        assert command(name).startswith(
            "celery -A workers worker"
        ) and "--concurrency=1" in command(name)


def test_every_app_service_shares_broker_database_and_visibility_timeout():
    envs = [SERVICES[name]["environment"] for name in APP_SERVICES]
    assert {"migrate", "flower", "producer", *WORKERS} <= set(APP_SERVICES)
    for key in ("EXPLAINQ_BROKER_URL", "EXPLAINQ_DATABASE_URL", "EXPLAINQ_VISIBILITY_TIMEOUT"):
        assert len({env[key] for env in envs}) == 1, key
    assert "--basic-auth=" in command("flower")


def test_commands_exist_in_the_project():
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert command("migrate") == "results migrate" and "results" in scripts
    assert command("producer").startswith("producer submit") and "producer" in scripts
    assert (ROOT / "workers" / "celery_app.py").is_file()


def test_no_secret_is_committed_and_the_image_is_not_root():
    text = (ROOT / "docker-compose.yml").read_text()
    value = r"(\$\{[^}]*\}|[^@:\s\"]+)"  # a ${VAR...} reference, or a literal
    secrets = [
        *re.findall(rf"://[^:@/\s]*:{value}@", text),  # passwords inside URLs
        *re.findall(rf"--requirepass {value}", text),
        *[part for pair in re.findall(rf"--basic-auth={value}:{value}", text) for part in pair],
        *re.findall(rf"(?m)^\s*\w*PASSWORD: {value}", text),
    ]
    assert len(secrets) >= 7
    for secret in secrets:
        assert secret.startswith("${"), f"a literal secret in docker-compose.yml: {secret}"
    dockerfile = (ROOT / "Dockerfile").read_text()
    (user,) = re.findall(r"^USER (\S+)", dockerfile, re.M)
    assert user not in ("root", "0")
    assert "torch==2.13.0" in dockerfile
