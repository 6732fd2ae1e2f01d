-- One user's chronological history with item titles.
-- $sequences, $item_index, $items: Parquet paths of one dataset; $user: external user id.
WITH seq AS (
    SELECT unnest(items) AS item_idx, generate_subscripts(items, 1) AS position
    FROM read_parquet($sequences)
    WHERE user_id = $user
)
SELECT seq.position, ix.item_id, it.title
FROM seq
JOIN read_parquet($item_index) AS ix ON ix.item_idx = seq.item_idx
LEFT JOIN read_parquet($items) AS it ON it.item_id = ix.item_id
ORDER BY seq.position;
