"""The Flask application factory: reads like a table of contents of the app's subsystems."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Flask

ROOT = Path(__file__).resolve().parent.parent


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    app = Flask(
        __name__,
        instance_relative_config=True,
        template_folder=str(ROOT / "templates"),
        static_folder=str(ROOT / "static"),
    )
    from app.config import load_config

    app.config.from_mapping(load_config(Path(app.instance_path)))
    if test_config:
        app.config.from_mapping(test_config)

    from app import auth, cli, db, keys, problems, security, wallet
    from app.converters import DatabaseIdConverter

    app.url_map.converters["id"] = DatabaseIdConverter
    from app.views import api, apple_wallet, cashier, customer, google_wallet, manager, manager_offers, public
    from app.views import auth as auth_views
    from app.views import manager_exports as export_views

    db.init_app(app)
    keys.init_app(app)
    security.init_app(app)
    auth.init_app(app)
    problems.init_app(app)
    cli.init_app(app)
    wallet.init_app(app)

    app.register_blueprint(public.bp)
    app.register_blueprint(customer.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(auth_views.bp)
    app.register_blueprint(cashier.bp)
    app.register_blueprint(cashier.api_bp)
    app.register_blueprint(manager.bp)
    app.register_blueprint(manager_offers.bp)
    app.register_blueprint(export_views.bp)
    app.register_blueprint(apple_wallet.bp)
    app.register_blueprint(google_wallet.bp)
    if app.config["BENCH_REFERENCE_ENDPOINT"]:
        from app.views import bench_reference

        app.register_blueprint(bench_reference.bp)
    return app
