"""deploy/'s files agree with the code: every ACTIONQ_* variable they set is
a setting and the settings they give load (a Cluster store with a broker, a
Sentinel store whose primary name is the one the sentinels monitor), and the
KEDA triggers read the keys kombu writes. The files themselves are not run
here (no container engine); docs/testing.md says so."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from kombu.transport.redis import Channel

from actionq.messaging.celery_app import celery_config
from actionq.settings import Settings
from actionq.store_url import parse_store_url
from tests.helpers import ROOT

DEPLOY = ROOT / "deploy"
COMPOSE_FILES = sorted(DEPLOY.glob("docker-compose*.yml"))
KUBERNETES_FILES = sorted((DEPLOY / "kubernetes").glob("*.yaml"))
# ${NAME:?message} or ${NAME}: compose fills them from the env file.
_INTERPOLATION = re.compile(r"\$\{([A-Z_]+)(:\?[^}]*)?\}")


def _documents(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _settings_from(variables: dict[str, str]) -> Settings:
    """Settings from these variables only (as a container gets them)."""
    fields = {}
    for name, value in variables.items():
        if name.startswith("ACTIONQ_"):
            fields[name.removeprefix("ACTIONQ_").lower()] = _INTERPOLATION.sub("secret", value)
    unknown = sorted(f"ACTIONQ_{f.upper()}" for f in fields if f not in Settings.model_fields)
    assert unknown == [], f"not settings: {unknown}"
    return Settings(**fields)


def _compose_environments(path: Path) -> dict[str, dict[str, str]]:
    services = _documents(path)[0]["services"]
    return {
        name: {k: str(v) for k, v in (service.get("environment") or {}).items()}
        for name, service in services.items()
    }


def _actionq_config_maps() -> dict[str, dict[str, str]]:
    found = {}
    for path in KUBERNETES_FILES:
        for document in _documents(path):
            if document.get("kind") == "ConfigMap" and document["metadata"]["name"] == "actionq":
                found[path.name] = {k: str(v) for k, v in document["data"].items()}
    return found


@pytest.mark.parametrize("path", COMPOSE_FILES, ids=lambda p: p.name)
def test_compose_services_get_settings_that_load(path: Path) -> None:
    environments = {
        n: e for n, e in _compose_environments(path).items() if "ACTIONQ_REDIS_URL" in e
    }
    assert {"worker", "sweeper", "api"} <= set(environments)
    for environment in environments.values():
        _settings_from(environment)


def test_every_topology_has_an_actionq_config_map_that_loads() -> None:
    config_maps = _actionq_config_maps()
    assert set(config_maps) == {"actionq.yaml", "valkey-sentinel.yaml", "valkey-cluster.yaml"}
    broker = {
        "ACTIONQ_BROKER_URL": "amqp://user:secret@rabbitmq:5672//"
    }  # the Secret actionq-broker
    topologies = {}
    for name, data in config_maps.items():
        settings = _settings_from(data | broker if name == "valkey-cluster.yaml" else data)
        topologies[name] = parse_store_url(settings.redis_url).topology
    assert topologies == {
        "actionq.yaml": "single",
        "valkey-sentinel.yaml": "sentinel",
        "valkey-cluster.yaml": "cluster",
    }


def test_the_sentinel_layouts_broker_is_kombus_sentinel_transport() -> None:
    environment = _compose_environments(DEPLOY / "docker-compose.sentinel.yml")["worker"]
    settings = _settings_from(environment)
    config = celery_config(settings)
    assert config["broker_url"] == (
        "sentinel://sentinel-1:26379/0;sentinel://sentinel-2:26379/0;sentinel://sentinel-3:26379/0"
    )
    # The name the sentinels monitor (deploy/valkey/sentinel.conf).
    monitored = re.search(
        r"^sentinel monitor (\S+) ", (DEPLOY / "valkey" / "sentinel.conf").read_text(), re.M
    )
    assert monitored is not None
    assert config["broker_transport_options"]["master_name"] == monitored.group(1) == "actionq"


def test_the_cluster_layouts_broker_is_rabbitmq() -> None:
    environment = _compose_environments(DEPLOY / "docker-compose.cluster.yml")["worker"]
    settings = _settings_from(environment)
    assert parse_store_url(settings.redis_url).topology == "cluster"
    assert settings.effective_broker_url.startswith("amqp://actionq:secret@rabbitmq:5672/")
    assert settings.broker_queue_type == "quorum"
    assert _actionq_config_maps()["valkey-cluster.yaml"]["ACTIONQ_BROKER_QUEUE_TYPE"] == "quorum"


def _triggers(path: Path) -> list[dict[str, Any]]:
    objects = [d for d in _documents(path) if d.get("kind") == "ScaledObject"]
    assert len(objects) == 1
    return list(objects[0]["spec"]["triggers"])


@pytest.mark.parametrize("name", ["keda-scaledobject.yaml", "keda-scaledobject-sentinel.yaml"])
def test_keda_counts_the_queue_and_kombus_unacked_hash(name: str) -> None:
    path = DEPLOY / "kubernetes" / name
    keys = {t["name"]: t["metadata"]["listName"] for t in _triggers(path)}
    assert keys == {
        "waiting": Settings.model_fields["queue"].default,
        "unacked": Channel.unacked_key,
    }
    spec = next(d for d in _documents(path) if d.get("kind") == "ScaledObject")["spec"]
    assert spec["advanced"]["scalingModifiers"]["formula"] == "waiting + unacked"


def test_keda_counts_ready_and_unacked_rabbitmq_messages() -> None:
    (trigger,) = _triggers(DEPLOY / "kubernetes" / "keda-scaledobject-rabbitmq.yaml")
    # Only the management API's count includes the unacknowledged messages.
    assert trigger["metadata"]["protocol"] == "http"
    assert trigger["metadata"]["mode"] == "QueueLength"
    assert trigger["metadata"]["queueName"] == Settings.model_fields["queue"].default
