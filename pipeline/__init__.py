"""The nightly MMSR job: ``core`` settings, ``warehouse`` tables, ``stages``, ``serving``,
``orchestration`` (CLI and Airflow alike) and ``app`` (the ``mmsr`` command)."""
