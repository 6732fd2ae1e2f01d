"""Running the stages: the one step graph, in-process or isolated runs, the Airflow DAG, sharding."""
