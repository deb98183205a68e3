"""The Celery wire: the Celery app and its configuration (``celery_app``),
sending an action's message (``dispatch``), building it for the store's own
scripts to push (``direct_enqueue``), and the kombu Redis transport workers
use (``transport``). Which action may run is decided by the store, never here.
"""
