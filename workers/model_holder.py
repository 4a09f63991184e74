"""The per-process model: loaded once on the device this process owns, then kept.

Like LitServe's ``setup``: the task asks for a model by spec, the holder loads it the
first time (on the GPU that CUDA_VISIBLE_DEVICES leaves this process, or the CPU),
registers it in the database and keeps it. A worker serves one model, EXPLAINQ_MODEL
(its queue carries only that model's chunks): it refuses to load any other.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass

from contract.model_path import resolve_model
from contract.settings import Settings
from db.session import session_scope
from db.writes import register_model


@dataclass
class LoadedModel:
    spec: str
    classifier: object  # workers.engine.Classifier; typed loosely to keep torch lazy
    model_id: int  # in the database it was registered in
    device: str
    database: str = ""


log = logging.getLogger(__name__)
_lock = threading.Lock()
_current: LoadedModel | None = None


def pick_device() -> str:
    """The first GPU this process can see, else the CPU. Called only after the fork."""
    import torch

    return "cuda:0" if torch.cuda.is_available() else "cpu"


def describe_device(device: str, autocast: bool = False) -> str:
    """What an explanation row records as its device, precision included: the model's
    row describes the first worker that loaded it, not every one."""
    if device.startswith("cuda"):
        import torch

        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "all")
        name = torch.cuda.get_device_name(device)
        precision = ", bf16 autocast" if autocast else ""
        return f"{device} {name} (CUDA_VISIBLE_DEVICES={visible}){precision}"
    return "cpu"


class NotThisModel(ValueError):
    """A batch names a model this worker does not serve."""


def serves(spec: str, settings: Settings) -> bool:
    """Whether ``spec`` names this worker's model: the same spec, or one that resolves to
    the same checkpoint directory here (a path and the name under $EXPLAINQ_HOME/models)."""
    if spec == settings.model:
        return True
    try:
        return (
            resolve_model(spec, settings).resolve()
            == resolve_model(settings.model, settings).resolve()
        )
    except FileNotFoundError:
        return False


def get_model(spec: str, settings: Settings, sha256: str | None = None) -> LoadedModel:
    """The model of this worker, loaded once; ``NotThisModel`` for any other. With
    ``sha256`` (the weights on disk now, as a replay hashes them), loaded again if the
    held one was loaded from other weights."""
    global _current
    if not serves(spec, settings):
        raise NotThisModel(
            f"this worker serves EXPLAINQ_MODEL={settings.model!r} and loads no other model"
        )
    with _lock:
        held = getattr(_current.classifier, "sha256", None) if _current else None
        # A worker's settings never change; a process that serves several in turn (an
        # embedding application, the tests) gets the model and row of the current ones.
        stale = _current is None or (_current.spec, _current.database) != (
            settings.model, settings.sqlalchemy_url)  # fmt: skip
        if stale or (sha256 is not None and held != sha256):
            _current = None  # free the old weights before loading the new ones
            _current = _load(settings.model, settings)
        return _current


def _load(spec: str, settings: Settings) -> LoadedModel:
    from workers.engine import Classifier

    started = time.perf_counter()
    device = pick_device()
    path = resolve_model(spec, settings)
    classifier = Classifier.load(path, device=device)
    with session_scope(settings.sqlalchemy_url) as session:
        model_id = register_model(
            session,
            name=classifier.name,
            path=str(classifier.path),
            sha256=classifier.sha256,
            labels=classifier.labels,
            info=classifier.info,
        )
    log.info(
        "model %s loaded from %s on %s in %.1f s (sha256 %s, labels %s)",
        classifier.name, classifier.path, describe_device(device, classifier.autocast),
        time.perf_counter() - started, classifier.sha256[:12], ", ".join(classifier.labels),
    )  # fmt: skip
    return LoadedModel(spec=spec, classifier=classifier, model_id=model_id, device=device,
                       database=settings.sqlalchemy_url)  # fmt: skip


def worker_name(hostname: str | None) -> str:
    return f"{hostname or socket.gethostname()} pid {os.getpid()}"
