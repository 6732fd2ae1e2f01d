-- user_index.parquet: user_id <-> user_idx (dense, stable across reruns, append-only).
COPY (
    SELECT id AS user_id, idx AS user_idx FROM id_index WHERE kind = 'user' ORDER BY idx
) TO $path (FORMAT parquet);
