-- `mmsr report`: the newest published night of $dataset (NULL when none).
SELECT max(run_date) FROM recommendations WHERE dataset = $dataset;
