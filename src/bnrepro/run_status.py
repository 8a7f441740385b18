"""The statuses of a run folder's summary.json that make it a result (callbacks/summary.py writes them).

A bottom-level module: run.py (may a folder be trained into?) and results/ (is a run a result?) both
read it, and neither imports the other."""

COMPLETE = ("finished", "diverged")  # trained to its end, or stopped by divergence
