"""Shared Flax linen layers with logical axis names."""
