-- item_index.parquet: item_id <-> item_idx (dense, stable across reruns, append-only).
COPY (
    SELECT id AS item_id, idx AS item_idx FROM id_index WHERE kind = 'item' ORDER BY idx
) TO $path (FORMAT parquet);
