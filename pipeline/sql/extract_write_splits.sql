-- splits.parquet: user_idx, split ('train'|'valid'|'test'), target_pos INTEGER.
COPY (
    SELECT user_idx, split, target_pos FROM splits ORDER BY user_idx, target_pos
) TO $path (FORMAT parquet);
