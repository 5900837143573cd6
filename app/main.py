"""ASGI entry point: ``uvicorn app.main:app``.  Building the app is cheap; models load in its lifespan."""

from app.factory import create_app

app = create_app()
