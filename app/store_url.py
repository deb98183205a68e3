"""Where the store lives, from its URL: one Redis (``redis://``, ``rediss://``,
``unix://``), a Redis Cluster (``redis+cluster://``) or a primary that
Sentinel watches (``redis+sentinel://``). docs/configuration.md gives the forms.

- ``redis+cluster://[user:password@]host:port[,host:port...]``: any reachable
  node is enough to find the others; a cluster has database 0 only.
- ``redis+sentinel://[user:password@]host:port[,host:port...]/<primary name>[/<db>]``:
  the sentinels' addresses; the password (if any) is the data servers',
  as kombu's sentinel transport treats it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import unquote, urlsplit

__all__ = ["StoreAddress", "kombu_sentinel_url", "parse_store_url"]

CLUSTER_SCHEME = "redis+cluster"
SENTINEL_SCHEME = "redis+sentinel"

Topology = Literal["single", "cluster", "sentinel"]


@dataclass(frozen=True)
class StoreAddress:
    """A parsed store URL (``parse_store_url``)."""

    topology: Topology
    url: str
    hosts: tuple[tuple[str, int], ...] = ()
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    primary_name: str = ""
    db: int = 0


def _hosts(netloc: str, default_port: int, url: str) -> tuple[tuple[str, int], ...]:
    hosts = []
    for part in netloc.split(","):
        host, _, port = part.strip().rpartition(":")
        if not host:
            host, port = port, str(default_port)
        if not host or not port.isdigit():
            raise ValueError(f"store URL {url!r}: {part!r} is not host:port")
        hosts.append((host.strip("[]"), int(port)))
    if not hosts:
        raise ValueError(f"store URL {url!r} names no host")
    return tuple(hosts)


def parse_store_url(url: str) -> StoreAddress:
    """The store's topology and addresses, or a ValueError that says what is
    wrong with ``url``."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in (CLUSTER_SCHEME, SENTINEL_SCHEME):
        return StoreAddress("single", url)
    # urlsplit cannot parse a comma-separated host list: split by hand.
    rest = url.split("://", 1)[1]
    credentials, _, location = rest.rpartition("@")
    netloc, _, path = location.partition("/")
    username = password = None
    if credentials:
        user, _, secret = credentials.partition(":")
        username, password = unquote(user) or None, unquote(secret) or None
    parts = [p for p in path.split("/") if p]
    if urlsplit(url).query:
        raise ValueError(f"store URL {url!r}: options in a query string are not supported")
    if scheme == CLUSTER_SCHEME:
        if parts and parts != ["0"]:
            raise ValueError(f"store URL {url!r}: a Redis Cluster has database 0 only")
        return StoreAddress(
            "cluster", url, _hosts(netloc, 6379, url), username=username, password=password
        )
    if not parts or len(parts) > 2 or (len(parts) == 2 and not parts[1].isdigit()):
        raise ValueError(
            f"store URL {url!r}: expected redis+sentinel://host:port[,host:port...]"
            "/<primary name>[/<db>]"
        )
    return StoreAddress(
        "sentinel",
        url,
        _hosts(netloc, 26379, url),
        username=username,
        password=password,
        primary_name=parts[0],
        db=int(parts[1]) if len(parts) == 2 else 0,
    )


def kombu_sentinel_url(address: StoreAddress) -> str:
    """The same sentinels as a broker URL of kombu's sentinel transport
    (``sentinel://host:port/db;sentinel://...``; the primary's name goes in
    the transport options). kombu reads the database from the first URL, so
    each one carries it."""
    auth = ""
    if address.password is not None:
        auth = f"{address.username or ''}:{address.password}@"
    return ";".join(f"sentinel://{auth}{host}:{port}/{address.db}" for host, port in address.hosts)
