-- Staged meta -> table `meta`, one row per item: the first line for an item wins
-- (the Magazine meta repeats lines for one ASIN).
-- $meta: staged meta Parquet (item_id, title, brand, categories, description, image_ref, line).
CREATE OR REPLACE TABLE meta AS
SELECT item_id, title, brand, categories, description, image_ref
FROM read_parquet($meta)
QUALIFY row_number() OVER (PARTITION BY item_id ORDER BY line) = 1;
