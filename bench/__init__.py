"""Benchmarks (not tests): each starts its own server and workers and prints a table."""
