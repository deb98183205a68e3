"""What a store URL means (actionq.store_url), and the broker it implies."""

from __future__ import annotations

import pytest

from actionq.messaging.celery_app import celery_config
from actionq.settings import Settings
from actionq.store_url import parse_store_url


def test_one_server_urls_are_passed_through() -> None:
    for url in ("redis://127.0.0.1:6379/3", "rediss://h:1/0", "unix:///tmp/r.sock?db=2"):
        address = parse_store_url(url)
        assert (address.topology, address.url) == ("single", url)


def test_a_cluster_url_lists_its_nodes() -> None:
    address = parse_store_url("redis+cluster://user:p%40ss@10.0.0.1:7000,10.0.0.2:7001,host3")
    assert address.topology == "cluster"
    assert address.hosts == (("10.0.0.1", 7000), ("10.0.0.2", 7001), ("host3", 6379))
    assert (address.username, address.password) == ("user", "p@ss")
    assert "p@ss" not in repr(address)


def test_a_sentinel_url_names_the_primary_and_the_database() -> None:
    address = parse_store_url("redis+sentinel://:secret@s1:26379,s2:26380/mymaster/4")
    assert address.topology == "sentinel"
    assert address.hosts == (("s1", 26379), ("s2", 26380))
    assert (address.primary_name, address.db, address.password) == ("mymaster", 4, "secret")
    assert parse_store_url("redis+sentinel://s1/main").db == 0


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("redis+cluster://h:1/2", "database 0 only"),
        ("redis+sentinel://s1:26379", "primary name"),
        ("redis+sentinel://s1:26379/m/x", "primary name"),
        ("redis+cluster://h:port", "not host:port"),
        ("redis+cluster://h:1?ssl=true", "query string"),
    ],
)
def test_a_malformed_url_says_what_is_wrong(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_store_url(url)


def test_a_cluster_store_needs_a_broker_of_its_own() -> None:
    with pytest.raises(ValueError, match="ACTIONQ_BROKER_URL"):
        Settings(redis_url="redis+cluster://127.0.0.1:7000")
    settings = Settings(redis_url="redis+cluster://127.0.0.1:7000", broker_url="amqp://h//")
    assert settings.effective_broker_url == "amqp://h//"


def test_a_sentinel_store_is_also_the_broker_through_kombus_sentinel_transport() -> None:
    settings = Settings(redis_url="redis+sentinel://:pw@s1:26379,s2:26380/main/2")
    assert settings.effective_broker_url == "sentinel://:pw@s1:26379/2;sentinel://:pw@s2:26380/2"
    from kombu import Connection

    broker = Connection(settings.effective_broker_url)
    assert (broker.transport_cls, broker.virtual_host, broker.password) == ("sentinel", "2", "pw")
    config = celery_config(settings)
    assert config["broker_transport"] is None  # kombu picks its sentinel transport
    assert config["broker_transport_options"]["master_name"] == "main"


def test_a_key_prefix_with_a_brace_is_refused() -> None:
    with pytest.raises(ValueError, match="key_prefix"):
        Settings(key_prefix="a{b}")
