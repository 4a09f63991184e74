"""The Celery settings the tasks run under: only verify keeps its result, and behind
Redis Sentinel the result backend finds the master as the broker does."""

from __future__ import annotations

import redis
from celery import Celery

from contract.settings import Settings
from contract.tasks import EXPLAIN_TASK, SWEEP_TASK, VERIFY_TASK, celery_config

SENTINELS = "sentinel://127.0.0.1:26379;sentinel://127.0.0.1:26380"


def test_only_verify_keeps_its_result():
    import workers.tasks  # noqa: F401  (registers the tasks on the app)
    from workers.celery_app import app

    assert app.tasks[EXPLAIN_TASK].ignore_result is True
    assert app.tasks[SWEEP_TASK].ignore_result is True
    assert app.tasks[VERIFY_TASK].ignore_result is False


def test_a_sentinel_broker_names_its_master_to_the_result_backend_too():
    settings = Settings(broker_url=SENTINELS, broker_master="mymaster")
    config = celery_config(settings)
    assert config["broker_transport_options"]["master_name"] == "mymaster"
    assert config["result_backend_transport_options"] == {"master_name": "mymaster"}
    app = Celery("probe")
    app.conf.update(config)
    # the backend's pool asks the sentinels for this master (no connection made yet)
    assert app.backend.client.connection_pool.service_name == "mymaster"

    plain = celery_config(Settings(broker_url="redis://127.0.0.1:6379/0"))
    assert "master_name" not in plain["broker_transport_options"]
    assert "result_backend_transport_options" not in plain


def test_a_chunk_sent_by_name_asks_for_no_result(broker_url):
    """The producer sends chunks by name, so Celery cannot see the task's own
    ignore_result: without it in the options, the verify task's result backend made every
    chunk subscribe to its result (a round trip each, and 20 s of retries per submit when
    the broker is down)."""
    from contract.tasks import ChunkMessage, chunk_send_options
    from producer.submit import broker_app

    options = chunk_send_options(ChunkMessage("b", [1, 2]), "/m/tiny", ["lig"], "probe")
    assert options["ignore_result"] is True
    app = broker_app(Settings(broker_url=broker_url, queue="probe-unused"))
    result = app.send_task(EXPLAIN_TASK, args=["b", [1]], **options)
    assert result.ignored
    assert not app.backend._pending_results.concrete  # nothing subscribed
    redis.Redis.from_url(broker_url).delete(options["queue"])
