"""Baselines trained and evaluated in the same harness as MMSR."""
