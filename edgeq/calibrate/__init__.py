"""Calibration: data readers, streaming observers, range methods, the ranges table."""
