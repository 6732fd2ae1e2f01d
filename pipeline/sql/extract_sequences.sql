-- Table `sequences`: one row per user_idx of the index (dense 0..U-1, as the loaders
-- require), with the user's items (item_idx) and timestamps in chronological order.
-- Ties on ts (reviews share a day; same-second events) break by item_id: deterministic
-- and independent of the order of lines in the raw file. A user kept in the append-only
-- index whose interactions are all gone in this run (k-core, changed input) gets empty lists.
CREATE OR REPLACE TABLE sequences AS
SELECT
    u.idx AS user_idx,
    u.id AS user_id,
    coalesce(list(it.idx ORDER BY i.ts, i.item_id) FILTER (WHERE it.idx IS NOT NULL), [])::INTEGER[] AS items,
    coalesce(list(i.ts ORDER BY i.ts, i.item_id) FILTER (WHERE it.idx IS NOT NULL), [])::BIGINT[] AS ts
FROM id_index u
LEFT JOIN interactions i ON i.user_id = u.id
LEFT JOIN id_index it ON it.kind = 'item' AND it.id = i.item_id
WHERE u.kind = 'user'
GROUP BY u.idx, u.id;
