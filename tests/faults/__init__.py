"""Fault injection: seeded random operations and faults against a real local cluster (engine.py)."""
