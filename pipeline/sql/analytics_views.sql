-- Views over the warehouse Parquet that analysts query in MMSR_HOME/analytics.duckdb.
-- __WAREHOUSE__ is the absolute warehouse folder as a quoted SQL string literal: DuckDB cannot
-- bind parameters inside view definitions, so pipeline/analytics.py quotes it (see there).
-- Every source reads a glob over all datasets; `dataset` comes from the file's folder. The typed
-- empty SELECT in each UNION fixes the columns when no file exists yet (allow_empty).

CREATE VIEW items AS
SELECT regexp_extract(filename, '([^/]+)/items\.parquet$', 1) AS dataset,
       COLUMNS(lambda c: c NOT IN ('empty', 'filename'))
FROM (
    SELECT * FROM read_parquet(__WAREHOUSE__ || '/*/items.parquet',
                               filename = true, union_by_name = true, allow_empty = true)
    UNION ALL BY NAME
    SELECT NULL::VARCHAR AS filename, NULL::VARCHAR AS item_id, NULL::VARCHAR AS title,
           NULL::VARCHAR AS brand, NULL::VARCHAR[] AS categories, NULL::VARCHAR AS description,
           NULL::VARCHAR AS image_ref, NULL::BOOLEAN AS has_interactions
    WHERE false
);

CREATE VIEW interactions AS
SELECT regexp_extract(filename, '([^/]+)/interactions\.parquet$', 1) AS dataset,
       COLUMNS(lambda c: c NOT IN ('empty', 'filename'))
FROM (
    SELECT * FROM read_parquet(__WAREHOUSE__ || '/*/interactions.parquet',
                               filename = true, union_by_name = true, allow_empty = true)
    UNION ALL BY NAME
    SELECT NULL::VARCHAR AS filename, NULL::VARCHAR AS user_id, NULL::VARCHAR AS item_id,
           NULL::BIGINT AS ts, NULL::DOUBLE AS rating
    WHERE false
);

CREATE VIEW recommendations AS
SELECT regexp_extract(filename, '([^/]+)/recommendations/[^/]+/[^/]+$', 1) AS dataset,
       COLUMNS(lambda c: c NOT IN ('empty', 'filename'))
FROM (
    SELECT * FROM read_parquet(__WAREHOUSE__ || '/*/recommendations/*/*.parquet', filename = true,
                               union_by_name = true, allow_empty = true, hive_partitioning = false)
    UNION ALL BY NAME
    SELECT NULL::VARCHAR AS filename, NULL::DATE AS run_date, NULL::VARCHAR AS user_id,
           NULL::INTEGER AS rank, NULL::VARCHAR AS item_id, NULL::FLOAT AS score,
           NULL::VARCHAR AS model_name, NULL::INTEGER AS model_version
    WHERE false
);

CREATE VIEW model_runs AS
SELECT regexp_extract(filename, '([^/]+)/model_runs\.parquet$', 1) AS dataset,
       COLUMNS(lambda c: c NOT IN ('empty', 'filename', 'dataset'))
FROM (
    SELECT * FROM read_parquet(__WAREHOUSE__ || '/*/model_runs.parquet',
                               filename = true, union_by_name = true, allow_empty = true)
    UNION ALL BY NAME
    SELECT NULL::VARCHAR AS filename, NULL::BIGINT AS model_version, NULL::VARCHAR AS run_id,
           NULL::TIMESTAMPTZ AS trained_at, NULL::VARCHAR AS promotion
    WHERE false
);

-- the newest run_date of each dataset
CREATE VIEW latest_recommendations AS
SELECT * FROM recommendations
QUALIFY run_date = max(run_date) OVER (PARTITION BY dataset);

CREATE VIEW recommendations_with_items AS
SELECT r.dataset, r.run_date, r.user_id, r.rank, r.item_id, r.score,
       i.title, i.brand, i.image_ref, r.model_name, r.model_version
FROM recommendations AS r
LEFT JOIN items AS i ON i.dataset = r.dataset AND i.item_id = r.item_id;

-- one user's recommendations (every dataset) from each dataset's latest run, with titles
CREATE MACRO recs_for_user(uid) AS TABLE
SELECT r.*
FROM recommendations_with_items AS r
JOIN (SELECT dataset, max(run_date) AS run_date FROM recommendations GROUP BY dataset) AS latest
  ON latest.dataset = r.dataset AND latest.run_date = r.run_date
WHERE r.user_id = uid
ORDER BY r.dataset, r.rank;

-- one row per dataset and night: health figures and the publish gate's decision (see docs/pipeline.md);
-- nights the gate stopped are here too (published = false), their recommendations are not.
-- The columns are declared first so that the view has them before any night was checked.
CREATE VIEW recommendation_health AS
WITH declared AS (
    SELECT NULL::VARCHAR AS filename, NULL::DATE AS run_date, NULL::TIMESTAMPTZ AS computed_at,
           NULL::BIGINT AS rows, NULL::BIGINT AS users_expected, NULL::BIGINT AS users_served,
           NULL::BIGINT AS users_without_recs, NULL::BIGINT AS users_short, NULL::INTEGER AS k,
           NULL::BIGINT AS catalogue_items, NULL::BIGINT AS items_in_index,
           NULL::DOUBLE AS coverage_at_10, NULL::DOUBLE AS coverage_at_20, NULL::DOUBLE AS gini,
           NULL::DOUBLE AS top_1pct_share, NULL::DOUBLE AS mean_popularity_percentile,
           NULL::DOUBLE AS new_item_share, NULL::DOUBLE AS jaccard_at_20, NULL::BIGINT AS bad_scores,
           NULL::INTEGER AS model_version, NULL::INTEGER AS model_versions,
           NULL::DOUBLE AS test_hr_at_10, NULL::DOUBLE AS test_ndcg_at_10, NULL::DOUBLE AS test_mrr_at_10,
           NULL::DATE AS previous_run_date, NULL::BOOLEAN AS gate_passed,
           NULL::VARCHAR[] AS gate_failures, NULL::BOOLEAN AS published
    WHERE false
), nights AS (
    FROM read_parquet(__WAREHOUSE__ || '/*/health/*.parquet', filename = true, union_by_name = true,
                      allow_empty = true, hive_partitioning = false)
    UNION ALL BY NAME
    FROM declared
)
SELECT regexp_extract(filename, '([^/]+)/health/[^/]+$', 1) AS dataset,
       COLUMNS(lambda c: c NOT IN ('empty', 'filename'))
FROM nights;
