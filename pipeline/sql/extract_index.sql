-- Stable dense ids: table `id_index` (kind 'user'|'item', id, idx).
-- Items: those with interactions and the catalogue-only ones (table `catalogue`).
-- Ids of the previous run keep their idx; ids seen for the first time are appended
-- after them in id order, so reruns never renumber and new ids get idx >= previous count.
-- $prev_index: Parquet (kind, id, idx) of the previous run (empty on the first run).
CREATE OR REPLACE TABLE id_index AS
WITH prev AS (
    SELECT kind, id, idx FROM read_parquet($prev_index)
),
current_ids AS (
    SELECT DISTINCT 'user' AS kind, user_id AS id FROM interactions
    UNION
    SELECT DISTINCT 'item' AS kind, item_id AS id FROM interactions
    UNION
    SELECT 'item' AS kind, item_id AS id FROM catalogue
),
fresh AS (
    SELECT c.kind, c.id FROM current_ids c ANTI JOIN prev p ON p.kind = c.kind AND p.id = c.id
),
prev_count AS (
    SELECT k.kind, count(p.idx) AS n
    FROM (VALUES ('user'), ('item')) k(kind) LEFT JOIN prev p ON p.kind = k.kind
    GROUP BY k.kind
)
SELECT kind, id, idx::INTEGER AS idx FROM prev
UNION ALL
SELECT f.kind, f.id, (c.n + row_number() OVER (PARTITION BY f.kind ORDER BY f.id) - 1)::INTEGER AS idx
FROM fresh f JOIN prev_count c ON c.kind = f.kind;
