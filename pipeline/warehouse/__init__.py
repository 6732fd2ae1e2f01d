"""Reading and writing the warehouse under ``MMSR_HOME``: dataset tables, model runs, SQL statements."""
