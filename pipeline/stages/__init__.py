"""The nightly stages, one module or package each, in DAG order.

extract -> embed (text, image) -> codes -> train -> promote -> recommend -> publish.
Each stage is a plain function ``run_<stage>(settings, dataset, ...)`` that reads the
previous stages' tables and returns a small JSON-able report.
"""
