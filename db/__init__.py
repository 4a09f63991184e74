"""The data layer of explainq: the tables, sessions, migrations, writes and reads.

It imports nothing above it: neither the producer, the workers nor the read side (only
the torch-free ``contract``)."""
