"""The import path models registered by earlier releases were pickled with.

MLflow stores a pyfunc's wrapper class by module and name; this alias lets those
champions load (and be served or compared by the gate) until they are replaced.
"""

from pipeline.serving.pyfunc_model import MMSRPythonModel

__all__ = ["MMSRPythonModel"]
