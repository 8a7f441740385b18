"""Finished run folders -> the paper's tables and figures in results/."""
