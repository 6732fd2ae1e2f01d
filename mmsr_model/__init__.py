"""MMSR model library: tensors and arrays in, models and metrics out.

No Airflow, DuckDB or MLflow here: the pipeline owns all I/O.
"""
