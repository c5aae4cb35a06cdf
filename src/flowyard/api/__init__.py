"""The REST API (FastAPI): one router per resource, built by ``create_app(settings)``."""

from flowyard.api.app import create_app

__all__ = ["create_app"]
