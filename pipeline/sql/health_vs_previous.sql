-- How a night differs from the previous published one.
-- $night, $previous: globs of the two nights' Parquet; $item_index: the dataset's item index;
-- $new_from: the previous night's item_index row count (ids are append-only, so item_idx >= it is new).
WITH night AS (
    SELECT user_id, rank, item_id FROM read_parquet($night, hive_partitioning = false)
), previous AS (
    SELECT user_id, item_id FROM read_parquet($previous, hive_partitioning = false) WHERE rank <= 20
), top20 AS (
    SELECT user_id, item_id FROM night WHERE rank <= 20
), sizes AS (
    SELECT user_id, a.n AS n_night, b.n AS n_previous
    FROM (SELECT user_id, count(*) AS n FROM top20 GROUP BY user_id) AS a
    JOIN (SELECT user_id, count(*) AS n FROM previous GROUP BY user_id) AS b USING (user_id)
), shared AS (
    SELECT user_id, count(*) AS n FROM top20 JOIN previous USING (user_id, item_id) GROUP BY user_id
)
SELECT
    (SELECT avg(CASE WHEN ix.item_idx >= $new_from THEN 1.0 ELSE 0.0 END)
     FROM night LEFT JOIN read_parquet($item_index) AS ix USING (item_id)) AS new_item_share,
    (SELECT avg(coalesce(shared.n, 0) / (sizes.n_night + sizes.n_previous - coalesce(shared.n, 0)))
     FROM sizes LEFT JOIN shared USING (user_id)) AS jaccard_at_20;
