-- `mmsr report`: the night's most recommended items with titles and image references.
-- $dataset, $run_date: the night; $limit: how many items.
SELECT r.item_id,
       any_value(r.title) AS title,
       any_value(r.image_ref) AS image_ref,
       count(*) AS slots,
       count(DISTINCT r.user_id) AS users,
       avg(r.rank) AS mean_rank
FROM recommendations_with_items AS r
WHERE r.dataset = $dataset AND r.run_date = $run_date
GROUP BY r.item_id
ORDER BY slots DESC, r.item_id
LIMIT $limit;
