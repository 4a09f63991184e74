# The explainq app image: producer, workers, results CLI and Flower share it.
FROM python:3.11-slim

# torch first, pinned: an unpinned torch would pull whatever build the index has.
# Build with --build-arg TORCH_SPEC=... to pick a CUDA build for GPU workers.
ARG TORCH_SPEC=torch==2.13.0
ENV PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    EXPLAINQ_HOME=/var/lib/explainq

RUN pip install "${TORCH_SPEC}"

WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY db ./db
COPY producer ./producer
COPY workers ./workers
RUN pip install ".[workers]"

# Never run as root: a worker executes model code from a mounted directory.
RUN useradd --uid 10001 --create-home --home-dir /home/explainq explainq \
    && mkdir -p /var/lib/explainq && chown explainq /var/lib/explainq
USER explainq

CMD ["celery", "-A", "workers", "worker", "--loglevel=INFO", "--concurrency=1", "-E"]
