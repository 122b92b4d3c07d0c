"""The WSGI entry point for gunicorn: ``gunicorn wsgi:app``.

Reads ``COLLECTOR_CONFIG`` and ``REDIS_URL`` from the environment.
"""

from collector import create_app

app = create_app()
