-- Table `sequences`: each user's items (item_idx) and timestamps in chronological order.
-- Ties on ts (reviews share a day; same-second events) break by item_id: deterministic
-- and independent of the order of lines in the raw file.
CREATE OR REPLACE TABLE sequences AS
SELECT
    u.idx AS user_idx,
    i.user_id,
    list(it.idx ORDER BY i.ts, i.item_id)::INTEGER[] AS items,
    list(i.ts ORDER BY i.ts, i.item_id)::BIGINT[] AS ts
FROM interactions i
JOIN id_index u ON u.kind = 'user' AND u.id = i.user_id
JOIN id_index it ON it.kind = 'item' AND it.id = i.item_id
GROUP BY u.idx, i.user_id;
