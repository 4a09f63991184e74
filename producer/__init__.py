"""explainq producer: validates input files, registers documents, enqueues chunks.

It never imports torch, transformers or the worker code: tasks are sent by name."""
