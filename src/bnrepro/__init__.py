"""Reproduction of Ioffe & Szegedy 2015, "Batch Normalization" (BN-Inception), with Lightning + Hydra."""
