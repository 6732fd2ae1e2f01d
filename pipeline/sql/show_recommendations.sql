-- One user's top $k from the dataset's latest recommendation run, with item titles.
-- $recommendations: glob over the dataset's partitions; $items: its items.parquet.
WITH recs AS (
    SELECT * FROM read_parquet($recommendations, hive_partitioning = false)
)
SELECT recs.rank, recs.item_id, it.title, recs.score, recs.run_date, recs.model_name, recs.model_version
FROM recs
LEFT JOIN read_parquet($items) AS it ON it.item_id = recs.item_id
WHERE recs.user_id = $user AND recs.run_date = (SELECT max(run_date) FROM recs)
ORDER BY recs.rank
LIMIT $k;
