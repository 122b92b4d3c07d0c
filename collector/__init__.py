"""The first-party collector: a Flask app that takes events from the snippet
and queues them for delivery to Depict and Drivly Commerce.

``create_app(config)`` builds it: defaults first, then the environment
(``COLLECTOR_CONFIG``, ``REDIS_URL``), then the mapping passed in (tests,
``collector dev``). Nothing happens at import.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from collector.config import defaults
from collector.config.loading import load_config
from collector.config.schema import CollectorConfig, CollectorSettings
from collector.inbound import bots
from collector.storage import rate_limit_storage


def _site_config(value: Any) -> CollectorConfig:
    if isinstance(value, CollectorConfig):
        return value
    if not value:
        raise RuntimeError("no site configuration: pass --config PATH or set COLLECTOR_CONFIG")
    return load_config(value)


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    app = Flask(__name__, static_folder=None)
    app.config.from_mapping(
        COLLECTOR_CONFIG=os.environ.get("COLLECTOR_CONFIG"),
        REDIS_URL=os.environ.get("REDIS_URL"),
        DEMO=False,
        COLLECTOR_PROCESSES=int(os.environ.get("COLLECTOR_PROCESSES", "1")),  # server processes sharing the rate limit
        MAX_CONTENT_LENGTH=defaults.MAX_BODY_BYTES,
    )
    if config:
        app.config.update(config)
    if not app.config["REDIS_URL"]:
        raise RuntimeError("REDIS_URL is not set; `collector dev` starts an embedded Redis for you")
    site_config = _site_config(app.config["COLLECTOR_CONFIG"])
    counted_in_redis = site_config.settings.rate_limit_storage == "redis"
    app.config.setdefault("RATELIMIT_STORAGE_URI", app.config["REDIS_URL"] if counted_in_redis else f"{rate_limit_storage.SCHEME}://")

    hops = site_config.settings.trusted_proxy_hops
    if hops:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops, x_prefix=hops)  # type: ignore[method-assign]

    _bind_extensions(app, site_config)
    _register_blueprints(app)
    if any(site.drops_bots for site in site_config.sites.values()):
        bots.load_list()
    return app


def _bind_extensions(app: Flask, site_config: CollectorConfig) -> None:
    from collector.errors import register_error_handlers
    from collector.extensions import CollectorState, connect_redis, limiter, limiter_timeout, queue_timeout
    from collector.inbound.sources.api import write_key_index
    from collector.storage.outbox import Outbox

    redis = connect_redis(app.config["REDIS_URL"], queue_timeout(site_config.settings))
    app.extensions["collector"] = CollectorState(
        config=site_config,
        redis=redis,
        outbox=Outbox(redis, site_config.settings.dedupe_window_seconds),
        allowed_origins=frozenset(origin for site in site_config.sites.values() for origin in site.origins),
        write_keys=write_key_index(site_config.sites),
        process_rate_limit=_process_rate_limit(app, site_config.settings),
        keeps_live_tail=site_config.console is not None or bool(app.config["DEMO"]),
    )
    if site_config.settings.rate_limit_storage == "redis":
        limiter_redis = connect_redis(app.config["REDIS_URL"], limiter_timeout(site_config.settings))
        app.config.setdefault("RATELIMIT_STORAGE_OPTIONS", {"connection_pool": limiter_redis.connection_pool})
    limiter.init_app(app)
    register_error_handlers(app)


def _process_rate_limit(app: Flask, settings: CollectorSettings) -> str:
    from collector.extensions import limit_for_this_process

    return limit_for_this_process(settings, int(app.config["COLLECTOR_PROCESSES"]), settings.rate_limit)


def _register_blueprints(app: Flask) -> None:
    from collector.inbound import collect, openapi, snippet
    from collector.inbound.sources import api as sources
    from collector.observe import health, metrics

    for module in (collect, sources, snippet, openapi, health, metrics):
        app.register_blueprint(module.bp)
    if app.config["DEMO"]:
        from collector import demo

        app.register_blueprint(demo.bp)
    console_settings = app.extensions["collector"].config.console
    if console_settings is not None:  # [console] token: the blueprint, and a session key derived from the token
        from collector.observe import console

        console.init_app(app, console_settings)
