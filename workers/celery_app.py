"""The Celery app, configured from the shared settings object."""

from __future__ import annotations

from celery import Celery

from db.settings import get_settings

app = Celery("explainq")
app.conf.update(get_settings().celery_config())
app.conf.include = ["workers.tasks"]
