"""What every part of the pipeline shares: typed settings, user-facing errors, logging, atomic writes."""
