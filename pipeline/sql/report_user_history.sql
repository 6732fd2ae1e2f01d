-- `mmsr report`: the latest $k interactions of the given users, newest first, with titles.
-- $dataset: the dataset; $users: a list of external user ids.
SELECT user_id, item_id, title, image_ref, ts
FROM (
    SELECT x.user_id, x.item_id, i.title, i.image_ref, x.ts,
           row_number() OVER (PARTITION BY x.user_id ORDER BY x.ts DESC, x.item_id DESC) AS recent
    FROM interactions AS x
    LEFT JOIN items AS i ON i.dataset = x.dataset AND i.item_id = x.item_id
    WHERE x.dataset = $dataset AND list_contains($users, x.user_id)
)
WHERE recent <= $k
ORDER BY user_id, recent;
