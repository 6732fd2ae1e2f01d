-- `mmsr report`: every registered model version of one dataset with its metrics. $dataset: the name.
SELECT * EXCLUDE (dataset)
FROM model_runs
WHERE dataset = $dataset
ORDER BY model_version;
