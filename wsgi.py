"""The WSGI entry: `gunicorn wsgi:app` (see Procfile and gunicorn.conf.py)."""

from feature_store import create_app

app = create_app()
