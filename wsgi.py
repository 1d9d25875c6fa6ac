"""The WSGI entry point: the only place that creates the application object."""

from app import create_app

app = create_app()
