"""The web gateway: a Flask app in front of TensorFlow Serving (``gunicorn "web:create_app()"``).

Importing this package never imports TensorFlow and never opens a gRPC channel: the client opens
its channel lazily in each worker process, after gunicorn has forked. Nor does it import Flask:
the command-line client (`python -m web.client`) runs on the standard library alone.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from web.settings import Settings, SettingsError

if TYPE_CHECKING:
    from flask import Flask

__all__ = ["create_app", "Settings", "SettingsError"]

REPO_ROOT = Path(__file__).resolve().parent.parent
MAX_FORM_PARTS = 200
MAX_FORM_FIELD_BYTES = 256 * 1024  # Werkzeug applies it to its read buffer too: well above 64 KiB


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app: settings (defaults, environment, then `config` keyed by env var names), the
    gateway facade at ``app.extensions["gateway"]``, the REST API, health/metrics, the HTML views,
    and the error handlers. Raises SettingsError naming the variable when a value is invalid.
    """
    from flask import Flask
    from werkzeug.middleware.proxy_fix import ProxyFix

    from web.gateway import Gateway
    from web.http.api import register_api
    from web.http.auth import install_auth
    from web.http.errors import register_error_handlers
    from web.http.health import bp as health_bp
    from web.http.health import install_request_metrics
    from web.http.multipart import GatewayRequest
    from web.http.security_headers import install_security_headers
    from web.http.views import bp as views_bp
    from web.integrations.label_studio.backend import register_label_studio
    from web.jobs.queue import JobQueue
    from web.storage import ResultStore

    settings = Settings.load(overrides=config)
    # The HTML blueprint serves web/http/static at /assets; no second copy at Flask's default /static.
    app = Flask(__name__, template_folder=str(REPO_ROOT / "templates"), static_folder=None)
    app.request_class = GatewayRequest
    app.config["MAX_CONTENT_LENGTH"] = settings.max_content_length
    # A batch is at most 64 images plus a label map and a few options; text fields are short.
    app.config["MAX_FORM_PARTS"] = MAX_FORM_PARTS
    app.config["MAX_FORM_MEMORY_SIZE"] = MAX_FORM_FIELD_BYTES
    app.json.sort_keys = False
    app.config["MAX_JOB_UPLOAD_BYTES"] = settings.max_job_upload_bytes
    store = ResultStore.from_settings(settings)
    app.extensions["gateway"] = Gateway(settings, store=store)
    # The job store and queue (SQLite under JOBS_FOLDER, or Redis): the gateway only submits; workers
    # (python -m web.worker) run the tasks. Nothing connects until the first job is queued, after the fork.
    app.extensions["jobs"] = JobQueue(settings.jobs)
    if not app.debug and not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    problem = store.storage_problem()
    if problem:  # predictions still work; the form and store=true will answer 507 until it is fixed
        app.logger.warning("results cannot be stored: %s (UPLOAD_FOLDER / OUTPUT_FOLDER)", problem)

    if settings.trusted_proxies:
        # Behind nginx (or another proxy): the client's address and scheme from X-Forwarded-*.
        n = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n, x_port=n)  # type: ignore[method-assign]

    register_error_handlers(app)
    install_auth(app)
    install_security_headers(app)
    install_request_metrics(app)
    app.register_blueprint(health_bp)
    register_api(app)
    app.register_blueprint(views_bp)
    register_label_studio(app)  # /label-studio/<model>: the Label Studio ML backend
    return app
