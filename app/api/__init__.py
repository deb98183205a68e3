"""The HTTP API (FastAPI; OpenAPI at ``/docs``). Build it with ``create_app``."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from actionq.api.body_limit import BodySizeLimit
from actionq.api.console.listing import listing_router
from actionq.api.console.page import console_router
from actionq.api.errors import install_error_handlers
from actionq.api.gate import RequestGate
from actionq.api.metrics import ApiMetrics
from actionq.api.openhands.sockets import sockets_router
from actionq.api.routes import protected, public
from actionq.api.session_routes import session_router
from actionq.api.session_token import session_secret
from actionq.api.stream import StreamSlots, stream_router
from actionq.errors import ConfigurationError, StoreUnavailableError
from actionq.secrets import SecretBox
from actionq.service import ActionQ
from actionq.settings import Settings, get_settings
from actionq.tools import load_tool_modules

__all__ = ["SHUTDOWN_GRACE_SECONDS", "create_app", "server_options"]

log = logging.getLogger(__name__)

# uvicorn's timeout_graceful_shutdown: on shutdown it waits for every open
# connection to end, and an event stream never does; after this it cancels
# them (clients reconnect with Last-Event-ID).
SHUTDOWN_GRACE_SECONDS = 3


def server_options(settings: Settings) -> dict[str, Any]:
    """How uvicorn serves the API (``actionq up`` and ``actionq api``)."""
    return {
        "timeout_graceful_shutdown": SHUTDOWN_GRACE_SECONDS,
        # The WebSocket (/sockets/events) needs the `websockets` library:
        # named rather than "auto", which without it would start a server that
        # refuses every socket; this way it fails to start instead.
        "ws": "websockets-sansio",
        # A client frame is bounded as a request body is (larger: close 1009).
        "ws_max_size": settings.api_max_body_bytes,
    }


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    if not settings.api_keys:
        raise ConfigurationError(
            "ACTIONQ_API_KEYS is empty: the API refuses to run without a key "
            "(set ACTIONQ_API_KEYS=<key>[,<key>...]; `actionq up` makes one for you)"
        )
    load_tool_modules(settings.tool_modules)
    for key in settings.api_keys:
        session_secret(key)  # derived once now, not in the first request
    aq = ActionQ(settings)
    follower = aq.event_follower()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Conversations older than the per-status index join it (once; the
        # worker's start-up recovery does it too).
        try:
            aq.store.backfill_status_index()
        except StoreUnavailableError as e:
            log.warning("per-status index not backfilled (Redis unavailable): %s", e)
        yield
        await follower.close()

    # /docs and /redoc with their scripts served from the installed
    # fastapi-offline package, not a CDN (they work offline).
    app = FastAPIOffline(
        title="actionq",
        version="0.1.0",
        summary="Every tool call of an AI agent as a durable Celery job.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.aq = aq
    app.state.metrics = ApiMetrics()
    app.state.follower = follower
    # Seals the LLM keys that OpenHands clients send (None: refused).
    app.state.secret_box = SecretBox.from_settings(settings)
    app.state.stream_slots = StreamSlots(settings.api_max_streams, settings.api_max_streams_per_key)
    app.add_middleware(BodySizeLimit, max_bytes=settings.api_max_body_bytes)
    install_error_handlers(app)
    app.include_router(public)
    app.include_router(console_router)
    app.include_router(session_router)
    # Before `protected`: its /events/{event_id} would take /events/stream.
    app.include_router(stream_router, responses=protected.responses)
    app.include_router(protected)
    app.include_router(listing_router)
    # Checks its key itself (the gate lets WebSockets through: the key may
    # come in the first frame).
    app.include_router(sockets_router)

    # Added last, so outermost: before the body limit and everything else.
    app.add_middleware(RequestGate, metrics=app.state.metrics, keys=settings.api_keys)
    return app
