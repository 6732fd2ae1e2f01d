-- Staged reviews -> table `interactions`, one row per exact (user, item, ts) duplicate group.
-- The first line in the file wins so that differing ratings resolve deterministically.
-- $reviews: staged reviews Parquet (user_id, item_id, ts, rating, line).
CREATE OR REPLACE TABLE interactions AS
SELECT user_id, item_id, ts, rating
FROM read_parquet($reviews)
QUALIFY row_number() OVER (PARTITION BY user_id, item_id, ts ORDER BY line, rating NULLS LAST) = 1;
