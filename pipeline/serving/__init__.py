"""The MLflow side: tracking and registry set-up, the pyfunc wrapper, the champion lookup."""
