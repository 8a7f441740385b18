"""Reproduction of Ioffe & Szegedy 2015, "Batch Normalization" (BN-Inception), with Lightning + Hydra."""

from bnrepro.console import quiet_known_noise

quiet_known_noise()  # the libraries' known, harmless messages (console.py names each), once per process
