"""Chaos soak: a real stack, scripted conversations, seeded random faults,
then invariants. Run ``python -m tests.chaos --help``."""
