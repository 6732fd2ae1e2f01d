-- One night's recommendation health, computed on the candidate partition before the publish gate.
-- $night: glob of the night's Parquet; $items, $interactions, $item_index, $sequences: the dataset's tables.
-- The catalogue is items.parquet (exactly the items of this run); popularity = interactions per item.
WITH recs AS (
    SELECT user_id, rank, item_id, score, model_version
    FROM read_parquet($night, hive_partitioning = false)
), catalogue AS (
    SELECT i.item_id, count(x.item_id) AS interactions
    FROM (SELECT DISTINCT item_id FROM read_parquet($items)) AS i
    LEFT JOIN read_parquet($interactions) AS x USING (item_id)
    GROUP BY i.item_id
), popularity AS (
    SELECT item_id,
           percent_rank() OVER (ORDER BY interactions) AS percentile,
           row_number() OVER (ORDER BY interactions DESC, item_id)
               <= ceil(0.01 * count(*) OVER ()) AS top_1pct
    FROM catalogue
), exposure AS (
    SELECT c.item_id, count(r.item_id) AS slots
    FROM catalogue AS c
    LEFT JOIN recs AS r USING (item_id)
    GROUP BY c.item_id
), gini AS (
    -- G = 2 * sum(i * x_i) / (n * sum(x)) - (n + 1) / n, x ascending, i = 1..n
    SELECT 2.0 * sum(pos * slots) / (count(*) * nullif(sum(slots), 0)) - (count(*) + 1.0) / count(*) AS gini
    FROM (SELECT slots, row_number() OVER (ORDER BY slots, item_id) AS pos FROM exposure)
), per_user AS (
    SELECT user_id, count(*) AS n FROM recs GROUP BY user_id
), k AS (
    SELECT coalesce(max(rank), 0) AS k FROM recs
)
SELECT
    (SELECT count(*) FROM recs) AS rows,
    (SELECT count(*) FROM read_parquet($sequences) WHERE len(items) > 0) AS users_expected,
    (SELECT count(*) FROM per_user) AS users_served,
    (SELECT count(*) FROM per_user, k WHERE per_user.n < k.k) AS users_short,
    (SELECT k FROM k) AS k,
    (SELECT count(*) FROM catalogue) AS catalogue_items,
    (SELECT count(*) FROM read_parquet($item_index)) AS items_in_index,
    (SELECT count(DISTINCT item_id) FILTER (WHERE rank <= 10) FROM recs)
        / nullif((SELECT count(*) FROM catalogue), 0) AS coverage_at_10,
    (SELECT count(DISTINCT item_id) FILTER (WHERE rank <= 20) FROM recs)
        / nullif((SELECT count(*) FROM catalogue), 0) AS coverage_at_20,
    (SELECT gini FROM gini) AS gini,
    (SELECT avg(CASE WHEN p.top_1pct THEN 1.0 ELSE 0.0 END) FROM recs LEFT JOIN popularity AS p USING (item_id))
        AS top_1pct_share,
    (SELECT avg(p.percentile) FROM recs JOIN popularity AS p USING (item_id)) AS mean_popularity_percentile,
    (SELECT count(*) FILTER (WHERE score IS NULL OR isnan(score) OR isinf(score)) FROM recs) AS bad_scores,
    (SELECT min(model_version) FROM recs) AS model_version,
    (SELECT count(DISTINCT model_version) FROM recs) AS model_versions;
