"""What users run: the ``mmsr`` CLI, ``mmsr show``, the demo and its synthetic data."""
