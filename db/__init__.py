"""Database layer of explainq: models, migrations, queries and the ``results`` CLI.

It imports neither the producer nor the workers."""
