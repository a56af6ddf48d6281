"""Mediaflow Portal: the whole login, wired in the order data moves."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from portal import (
    api,
    auth,
    cli,
    errors,
    gate,
    health,
    library,
    links,
    logs,
    mediaflow,
    metrics,
    pages,
    security,
    sessions,
    tokens,
)
from portal.config import DEFAULTS, ConfigError, configure, settings_from_env


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Create and configure the portal."""
    app = Flask(__name__, instance_relative_config=True)

    # 1. Configuration: defaults, then the environment (or what a test passes in), checked once.
    app.config.from_mapping(DEFAULTS)
    try:
        app.config.update(settings_from_env() if test_config is None else test_config)
        configure(app.config, app.instance_path)
    except ConfigError as error:
        # One clear line instead of a traceback; gunicorn and flask both stop on SystemExit.
        print(f"Mediaflow Portal cannot start: {error}", file=sys.stderr)
        raise SystemExit(2) from None

    # nginx asks /auth before each request to a protected app: a session this worker holds live copies of is
    # answered around Flask, anything else by the gate's view. Wrapped first: ProxyFix and every middleware
    # added below still see each request.
    app.wsgi_app = gate.KeptSessions(app, app.wsgi_app)  # type: ignore[method-assign]

    # Behind TRUSTED_PROXY_COUNT proxies, believe their X-Forwarded-* headers (the callback URL becomes https).
    if app.config["TRUSTED_PROXY_COUNT"]:
        hops = app.config["TRUSTED_PROXY_COUNT"]
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops, x_port=hops)  # type: ignore[method-assign]

    # 2. Extensions: redacted logs, Prometheus metrics (and /metrics), CSRF and security headers, Authlib's client
    #    for Mediaflow, server-side sessions, the token service on the same store, and a connection pool for
    #    Mediaflow's API.
    logs.init_app(app)
    counts = metrics.init_app(app)
    security.init_app(app)
    mediaflow.init_app(app)
    api.init_app(app)
    store = sessions.init_app(app, counts)
    tokens.init_app(app, store, counts)
    if app.config["MEDIAFLOW_DEMO"]:
        app.logger.warning("Demo mode: signing in against the emulator at %s with its public demo client; "
                           "set MEDIAFLOW_CLIENT_ID for Mediaflow", app.config["MEDIAFLOW_TOKEN_URL"])

    # For templates: the links every page repeats, and whether this is the demo.
    links.init_app(app)
    app.add_template_global(app.config["MEDIAFLOW_DEMO"], "demo_mode")

    # 3. Blueprints: login and logout, the pages, the media library, health checks, the gate for other apps (and who may
    #    enter); then the error pages.
    app.register_blueprint(auth.bp)
    app.register_blueprint(pages.bp)
    library.init_app(app)
    app.register_blueprint(health.bp)
    gate.init_app(app)
    errors.init_app(app)

    # 4. Before every request: load the session's token set and refresh it when due.
    app.before_request(auth.load_session)

    # 5. For scripts and servers: `flask --app app mediaflow password|refresh|me`.
    app.cli.add_command(cli.cli)

    return app
