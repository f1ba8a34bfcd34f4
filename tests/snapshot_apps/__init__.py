"""Helpers for the monitor's tests: a fake trainer process and the apps the snapshot tests shoot."""
