"""Worker-side wiring: the signal handlers, connected when a worker imports
this module. Celery imports it (``conf.include``, see
``actionq.messaging.celery_app.WORKER_MODULES``) before it sends
``worker_init`` and builds its bootsteps; nothing else imports it, so a
client, the API or the CLI connects no handler."""

from actionq.tasks.signals import connect_signal_handlers

connect_signal_handlers()
