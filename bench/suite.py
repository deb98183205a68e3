"""The sections of ``python -m bench``; each starts its own server and workers
and returns a JSON-ready dict."""

from __future__ import annotations

import contextlib
import os
import socket
import statistics
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from kombu import Connection, Queue
from rich.console import Console

from actionq.service import ActionQ
from actionq.settings import Settings
from bench import crash_detection, raw_crash_side
from bench.actionq_side import ActionqSide
from bench.agent_loop import AgentBench, measure_agent
from bench.api_memory import measure_api_memory
from bench.harness import Stack, summary
from bench.openhands_peer import OpenHandsBench, measure_openhands
from bench.peers import PEERS, not_installed, start_peer
from bench.raw_side import RawCelerySide
from bench.rounds import Round, throughput_result
from bench.topology import BenchCluster, ReplicatedPair, wait_calls

__all__ = [
    "TOPOLOGY_SIDES",
    "Config",
    "agent",
    "compare",
    "crash",
    "memory",
    "openhands",
    "scaling",
    "topology",
]

# Tables are wide: 120 columns when the output is not a terminal (a log, a pipe).
console = Console(width=None if sys.stdout.isatty() else 120)


@dataclass(frozen=True)
class Config:
    n: int  # tasks per throughput round
    rounds: int  # throughput rounds per side
    latency_samples: int
    crash_rounds: int
    worker_kill_rounds: (
        int  # actionq; raw Celery runs at most raw_crash_side.MAX_WORKER_KILL_ROUNDS
    )
    poison_window_s: float  # raw Celery with reject_on_worker_lost: how long to count runs
    raw_visibility_timeout: int  # raw Celery's visibility_timeout in the whole-worker kill
    concurrency: int  # prefork children per worker in the comparison
    scaling: tuple[int, ...]
    peers: bool
    memory_events: int  # events in the long conversation the API reads
    memory_baseline: int  # events in the short one it is compared with
    agent: AgentBench  # the agent loop (bench.agent_loop)
    openhands: OpenHandsBench  # against OpenHands' agent-server (bench.openhands_peer)


def server_version(url: str) -> str:
    client = redis.Redis.from_url(url)
    try:
        info = client.info("server")
    finally:
        client.close()
    name = str(info.get("server_name", "redis"))
    return f"{name} {info.get(f'{name}_version', info['redis_version'])}"


def compare(config: Config) -> dict[str, Any]:
    """actionq vs raw Celery (and peers) on one server, the same concurrency.

    Every side's worker runs for the whole section on its own queue; the
    latency samples alternate between sides, and so do the throughput rounds,
    so a slow moment of the machine hits every side alike.
    """
    c = config.concurrency
    with Stack() as stack, contextlib.ExitStack() as running:
        aq = ActionqSide(stack, c)
        running.callback(aq.close)
        raw = RawCelerySide(stack, c)
        running.callback(raw.close)
        sides: dict[str, Callable[[int], Round]] = {
            "actionq": aq.throughput,
            "celery_results": raw.with_results,
            "celery_fire_and_forget": raw.fire_and_forget,
            "actionq_one_conversation": aq.sequential,
        }
        not_measured: dict[str, str] = {}
        for peer in PEERS if config.peers else ():
            if not_installed(peer):
                not_measured[peer] = f"not measured ({peer} is not installed)"
                continue
            try:
                started = start_peer(peer, stack, c)
            except Exception as e:  # optional: a peer that will not start is reported, not fatal
                not_measured[peer] = f"not measured ({peer} failed to start: {e})"
                continue
            running.callback(started.close)
            sides[peer] = started.fire_and_forget
        if not config.peers:
            not_measured |= {peer: "not measured (--no-peers)" for peer in PEERS}

        console.print(f"latency: {config.latency_samples} samples per side, idle system")
        latency: dict[str, list[float]] = {"actionq": [], "celery": []}
        for _ in range(config.latency_samples):
            latency["actionq"].append(aq.latency())
            latency["celery"].append(raw.latency())

        results: dict[str, list[Round]] = {name: [] for name in sides}
        for i in range(config.rounds):
            for name, measure in sides.items():
                results[name].append(measure(config.n))
            line = "  ".join(f"{name} {r[-1].rate:.0f}/s" for name, r in results.items())
            console.print(f"  round {i + 1}/{config.rounds}: {line}", highlight=False)
        server = server_version(stack.url)

    throughput: dict[str, Any] = {name: throughput_result(r) for name, r in results.items()}
    throughput |= {name: {"not_measured": why} for name, why in not_measured.items()}
    return {
        "server": server,
        "concurrency": c,
        "n": config.n,
        "throughput": throughput,
        "ratios": _ratios(throughput),
        "latency_s": {name: summary(values) for name, values in latency.items()},
        "latency_raw_s": latency,
    }


def _ratios(throughput: dict[str, Any]) -> dict[str, float]:
    """actionq's median tasks/s divided by each other side's median."""
    ours = throughput["actionq"]["tasks_per_s"]["median"]
    return {
        f"actionq/{name}": ours / side["tasks_per_s"]["median"]
        for name, side in throughput.items()
        if name != "actionq" and "tasks_per_s" in side
    }


def scaling(config: Config) -> dict[str, Any]:
    """actionq throughput with 1, 2, 4 ... prefork children (one worker)."""
    out: dict[str, Any] = {}
    for c in config.scaling:
        with Stack() as stack:
            side = ActionqSide(stack, c)
            try:
                rounds = [side.throughput(config.n) for _ in range(config.rounds)]
            finally:
                side.close()
        out[str(c)] = throughput_result(rounds)
        rate = out[str(c)]["tasks_per_s"]["median"]
        console.print(f"  {c} worker process(es): median {rate:.0f} tasks/s", highlight=False)
    return out


def crash(config: Config) -> dict[str, Any]:
    """bench.crash_detection's two measurements, then raw Celery in the same
    situations (``bench.raw_crash_side``), on the same server."""

    def log(line: str) -> None:
        console.print(line, highlight=False)

    with Stack() as stack:
        settings = Settings(redis_url=stack.url, tool_modules=["bench.tools"])
        aq = ActionQ(settings)
        child = crash_detection.measure_child_kills(stack, aq, config.crash_rounds)
        log(f"  pool child SIGKILL: {len(child)} rounds done")
        whole = crash_detection.measure_worker_kills(stack, aq, config.worker_kill_rounds)
        # Counted after both: a body that ran again would have added a line by now.
        runs = {
            "child": crash_detection.body_runs(stack, "child", config.crash_rounds),
            "worker": crash_detection.body_runs(stack, "worker", config.worker_kill_rounds),
        }
        raw = {
            "child_sigkill": raw_crash_side.measure_child_kills(stack, config.crash_rounds, log),
            "child_sigkill_reject_on_worker_lost": raw_crash_side.measure_poison_loop(
                stack, config.poison_window_s, log
            ),
            "worker_sigkill": raw_crash_side.measure_worker_kills(
                stack, config.worker_kill_rounds, config.raw_visibility_timeout, log
            ),
        }
    return {
        "settings": {
            "worker_lease_seconds": settings.worker_lease_seconds,
            "heartbeat_interval": settings.heartbeat_interval,
            "sweep_interval": settings.sweep_interval,
            "pool_maintain_interval": settings.pool_maintain_interval,
            "visibility_timeout": settings.visibility_timeout,
        },
        "child_sigkill_s": summary(child),
        "worker_sigkill_s": summary(whole),
        "body_runs": runs,
        "raw": {"child": child, "worker": whole},
        "raw_celery": raw,
    }


def memory(config: Config) -> dict[str, Any]:
    """bench.api_memory: the API's RSS while it serves a long conversation."""
    return measure_api_memory(config.memory_events, config.memory_baseline, console=console)


def agent(config: Config) -> dict[str, Any]:
    """bench.agent_loop: per-step overhead of the agent loop, and concurrency."""
    return measure_agent(config.agent, lambda line: console.print(line, highlight=False))


def openhands(config: Config) -> dict[str, Any]:
    """bench.openhands_peer: actionq and OpenHands' agent-server, the same
    RemoteConversation client against both, in the same run."""
    return measure_openhands(config.openhands, lambda line: console.print(line, highlight=False))


# The broker of the topology sides that cannot (or do not) use direct enqueue.
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"


@dataclass(frozen=True)
class TopologySide:
    """One store layout and broker, measured by ``topology``."""

    name: str
    store: str  # "single" (the embedded server), "cluster" or "replicated"
    rabbitmq: bool  # broker: RabbitMQ; else the store's own Redis with direct enqueue
    replica_acks: int | None  # ACTIONQ_REPLICA_ACKS; None: unset (1 where there is a replica)
    no_acks_twin: str | None = None  # the same layout with replica acks off


TOPOLOGY_SIDES = (
    TopologySide("single", "single", rabbitmq=False, replica_acks=None),
    TopologySide("single_rabbitmq", "single", rabbitmq=True, replica_acks=None),
    TopologySide("cluster_no_acks", "cluster", rabbitmq=True, replica_acks=0),
    TopologySide("cluster_acks", "cluster", True, None, no_acks_twin="cluster_no_acks"),
    TopologySide("replicated_no_acks", "replicated", rabbitmq=False, replica_acks=0),
    TopologySide("replicated_acks", "replicated", False, None, no_acks_twin="replicated_no_acks"),
)


def _rabbitmq_up() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", 5672), timeout=1):
            return True
    except OSError:
        return False


def topology(config: Config) -> dict[str, Any]:
    """actionq's throughput on other store layouts, beside the one-server
    figure, in the same run: one server (direct enqueue), one server with
    RabbitMQ, a 3-primary cluster with a replica each and RabbitMQ (replica
    acks off, then on), one primary with one replica (off, then on).

    Every side has its own worker (the same ``concurrency`` prefork
    processes), key prefix and queue for the whole section; twins share a
    store. The rounds alternate side after side, as in ``compare``, so a
    slow moment of the machine hits every side alike. Around each round the
    store's servers are asked how many WAITs they ran (``INFO
    commandstats``): replica acks on must show about one per write, off none.
    """
    c = config.concurrency
    load_start = os.getloadavg()[0]  # others' work on the machine shows in the spread
    rabbitmq = _rabbitmq_up()
    not_measured = {
        side.name: f"not measured (no RabbitMQ at {AMQP_URL})"
        for side in TOPOLOGY_SIDES
        if side.rabbitmq and not rabbitmq
    }
    wanted = [side for side in TOPOLOGY_SIDES if side.name not in not_measured]
    queues: list[str] = []
    with contextlib.ExitStack() as running:
        single = running.enter_context(Stack())
        stacks = {"single": single}
        servers: dict[str, list[redis.Redis]] = {"single": [redis.Redis.from_url(single.url)]}
        layout: dict[str, Any] = {"single": {"server": server_version(single.url)}}
        if any(side.store == "cluster" for side in wanted):
            console.print("  starting a 3-primary cluster, a replica each")
            cluster = BenchCluster(single.base / "cluster").start()
            running.callback(cluster.stop)
            stacks["cluster"] = running.enter_context(
                Stack(single.base / "cluster-workers", redis_url=cluster.url())
            )
            servers["cluster"] = [node.client() for node in cluster.nodes]
            layout["cluster"] = {"primaries": 3, "replicas_per_primary": cluster.replicas}
        console.print("  starting a primary and its replica")
        pair = ReplicatedPair(single.base / "replicated").start()
        running.callback(pair.stop)
        stacks["replicated"] = running.enter_context(
            Stack(single.base / "replicated-workers", redis_url=pair.url())
        )
        servers["replicated"] = [pair.primary.client()]
        layout["replicated"] = {"primaries": 1, "replicas_per_primary": 1}
        for clients in servers.values():
            for client in clients:
                running.callback(client.close)
        if rabbitmq:
            running.callback(_delete_queues, queues)

        sides: dict[str, ActionqSide] = {}
        for side in wanted:
            name = f"aqbench-{side.name}-{uuid.uuid4().hex[:8]}"
            env = {"ACTIONQ_KEY_PREFIX": name, "ACTIONQ_QUEUE": name}
            env["ACTIONQ_AGENT_QUEUE"] = f"{name}.agent"
            if side.rabbitmq:
                env["ACTIONQ_BROKER_URL"] = AMQP_URL
                queues += [name, f"{name}.agent"]
            if side.replica_acks is not None:
                env["ACTIONQ_REPLICA_ACKS"] = str(side.replica_acks)
            console.print(f"  starting the worker of {side.name}")
            sides[side.name] = ActionqSide(stacks[side.store], c, env, name=side.name)
            running.callback(sides[side.name].close)

        results: dict[str, list[Round]] = {name: [] for name in sides}
        waits: dict[str, int] = dict.fromkeys(sides, 0)
        for i in range(config.rounds):
            for side in wanted:
                before = wait_calls(servers[side.store])
                results[side.name].append(sides[side.name].throughput(config.n))
                waits[side.name] += wait_calls(servers[side.store]) - before
            line = "  ".join(f"{name} {r[-1].rate:.0f}/s" for name, r in results.items())
            console.print(f"  round {i + 1}/{config.rounds}: {line}", highlight=False)

    throughput: dict[str, Any] = {}
    for side in wanted:
        throughput[side.name] = throughput_result(results[side.name]) | {
            "store": side.store,
            "broker": "rabbitmq" if side.rabbitmq else "the store's redis (direct enqueue)",
            "replica_acks_setting": side.replica_acks,
            "wait_calls_per_action": waits[side.name] / (config.rounds * config.n),
        }
    throughput |= {name: {"not_measured": why} for name, why in not_measured.items()}
    return {
        "concurrency": c,
        "n": config.n,
        "layout": layout,
        "loadavg_1min_start_end": [load_start, os.getloadavg()[0]],
        "throughput": throughput,
        "ratios": _topology_ratios(throughput),
    }


def _topology_ratios(throughput: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Each side's median over (a) the one server's, (b) the one server's
    with RabbitMQ and (c) its twin's with replica acks off."""

    def median(name: str | None) -> float | None:
        side = throughput.get(name or "", {})
        return side["tasks_per_s"]["median"] if "tasks_per_s" in side else None

    ratios: dict[str, dict[str, float]] = {}
    for side in TOPOLOGY_SIDES:
        ours = median(side.name)
        if ours is None:
            continue
        bases = {
            "single": median("single"),
            "single_rabbitmq": median("single_rabbitmq"),
            "no_acks_twin": median(side.no_acks_twin),
        }
        ratios[side.name] = {k: ours / v for k, v in bases.items() if v}
        if side.no_acks_twin in throughput and "rounds" in throughput[side.no_acks_twin]:
            # Round i of a side runs right after round i of its twin: the
            # ratio within a round cancels most of the machine's drift.
            pairs = zip(
                throughput[side.name]["rounds"],
                throughput[side.no_acks_twin]["rounds"],
                strict=True,
            )
            paired = [ours_i["rate"] / twin_i["rate"] for ours_i, twin_i in pairs]
            ratios[side.name]["no_acks_twin_paired"] = statistics.median(paired)
    return ratios


def _delete_queues(names: list[str]) -> None:
    """The topology sides' RabbitMQ queues: RabbitMQ is shared, leave nothing."""
    with Connection(AMQP_URL) as conn:
        for name in names:
            Queue(name, channel=conn.channel()).delete()
