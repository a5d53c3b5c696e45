"""The composition root: imports every built-in plug-in so that its registry knows it.

Registries (backbones, heads, job kinds, task kinds, strategies) import no
plug-in themselves; :func:`load_plugins` does, once per process. It is called by
:func:`loupe.api.app.create_app`, the ``loupe`` CLI and the ``loupe worker``
process, so the API and every worker know the same names. A new built-in
plug-in is one import line here. Importing this module registers nothing:
call :func:`load_plugins`.
"""

from __future__ import annotations

import threading

_lock = threading.Lock()
_loaded = False


def load_plugins() -> None:
    """Register the built-in backbones, heads, job kinds and task kinds (idempotent).

    Imports no torch: plug-in modules import it inside the functions that need it.
    """
    global _loaded
    with _lock:
        if _loaded:
            return
        # Backbones (loupe.features.registry): CNNs, ViT and the hand-made features.
        import loupe.features.backbones
        import loupe.features.classic

        # Job kinds (loupe.jobs.registry): each module registers its kinds.
        import loupe.jobs.selftest

        # Heads (loupe.learn.CLASS_HEADS / SCORE_HEADS).
        import loupe.learn
        import loupe.services.exports.archive
        import loupe.services.items.ingest
        import loupe.services.queues.map

        # Exporters (loupe.services.exports.registry): the export job's formats.
        import loupe.services.segments.exports
        import loupe.services.segments.train
        import loupe.services.training.chunks
        import loupe.services.training.predict
        import loupe.services.training.train
        import loupe.services.volumes.export
        import loupe.services.volumes.jobs

        # Active-learning strategies (loupe.select.registry).
        from loupe.select.builtin import register_builtin as register_strategies

        # Task kinds (loupe.tasks.registry): classify, score, segment, volume.
        from loupe.tasks.builtin import register_builtin

        register_builtin()
        register_strategies()

        del loupe  # the imports above are for their side effect only
        _loaded = True
