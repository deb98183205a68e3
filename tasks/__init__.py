"""Celery tasks and worker-side wiring for actionq.

- ``actionq.tasks.actions``: the ``run_action`` task.
- ``actionq.tasks.execution``: what one delivery of an action does (claim, run, finish).
- ``actionq.tasks.signals``: handlers for crashes, time limits and cancellation, which
  Celery calls in the worker's main process.
- ``actionq.tasks.worker_step``: the bootstep that keeps the worker's lease, sweeps
  for dead workers and reaps dead pool children quickly.
"""

__all__: list[str] = []
