"""The promise actionq exists for: a crash becomes an error, never a rerun.

- ``causes``: every ``ErrorCause`` with its message, classification and the
  conversation status it leads to (one table).
- ``stop``: ending an action from outside its run (``crash_action``,
  ``cancel_action``) and killing what its command left behind.
- ``lost_task``: what the worker's main process does when a pool child died.
- ``sweep``: the lease sweep, the claim audit and start-up recovery.
"""
