"""Callbacks: activation percentiles (Fig. 1b,c), the run summary."""
