"""The torch-free contract that every part of explainq builds on.

The producer, the workers, the data layer and the read side import it; it imports none of
them, nor torch, Celery or SQLAlchemy:

- ``settings``: the one settings object, read from ``EXPLAINQ_*`` variables;
- ``tasks``: the Celery task names, the message a task carries and the Celery settings;
- ``params`` and ``methods``: each attribution method's spec (its parameters with type,
  default, cap and help, and what is recorded on every row);
- ``caps``: the one check of a value against its ``EXPLAINQ_MAX_*`` cap;
- ``model_path``: where a model spec (a name or a directory) lives.
"""
