# The explainq app image: producer, workers, results CLI and Flower share it.
# No secret is baked in: every credential comes from the environment at run time.
FROM python:3.11-slim

# torch first, pinned: an unpinned torch would pull whatever build the index has.
# PyPI's Linux wheel bundles CUDA; pick another build with e.g.
#   --build-arg TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
# (left unquoted below so that extra pip options pass through).
ARG TORCH_SPEC=torch==2.13.0
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    EXPLAINQ_HOME=/var/lib/explainq

RUN pip install ${TORCH_SPEC}

WORKDIR /app
COPY pyproject.toml README.md alembic.ini ./
COPY contract ./contract
COPY db ./db
COPY producer ./producer
COPY results ./results
COPY web ./web
COPY workers ./workers
RUN pip install ".[workers]"

# Never run as root: a worker loads model files from a mounted directory.
RUN groupadd --gid 10001 explainq \
    && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/explainq explainq \
    && mkdir -p /var/lib/explainq \
    && chown explainq:explainq /var/lib/explainq
USER 10001:10001

CMD ["celery", "-A", "workers", "worker", "--loglevel=INFO", "--concurrency=1", "-E"]
