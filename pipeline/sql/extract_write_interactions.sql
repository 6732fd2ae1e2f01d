-- interactions.parquet: user_id, item_id, ts, rating after dedupe and k-core.
COPY (
    SELECT user_id, item_id, ts, rating FROM interactions ORDER BY user_id, ts, item_id
) TO $path (FORMAT parquet);
