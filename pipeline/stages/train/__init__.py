"""Train stage: MMSR and its baselines, logged and registered in MLflow (``run.run_train``).

``config`` builds the exact production ``TrainConfig`` without importing MLflow, so
benchmarks and tests can use it cheaply.
"""
