"""Benchmarks (scripts, not tests): `just bench mnist`."""
