-- sequences.parquet: user_idx, user_id, items INTEGER[] (item_idx), ts BIGINT[], chronological.
COPY (
    SELECT user_idx, user_id, items, ts FROM sequences ORDER BY user_idx
) TO $path (FORMAT parquet);
