-- `mmsr report`: every night's health row of one dataset, oldest first. $dataset: the dataset name.
SELECT * EXCLUDE (dataset)
FROM recommendation_health
WHERE dataset = $dataset
ORDER BY run_date;
