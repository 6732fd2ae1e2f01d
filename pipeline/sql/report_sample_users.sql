-- `mmsr report`: a few users of the night (a stable pseudo-random pick) with their top $k.
-- $dataset, $run_date: the night; $users: how many users; $k: recommendations per user.
WITH picked AS (
    SELECT user_id
    FROM (SELECT DISTINCT user_id FROM recommendations WHERE dataset = $dataset AND run_date = $run_date)
    ORDER BY md5(user_id), user_id
    LIMIT $users
)
SELECT r.user_id, r.rank, r.item_id, r.title, r.image_ref, r.score
FROM recommendations_with_items AS r
JOIN picked USING (user_id)
WHERE r.dataset = $dataset AND r.run_date = $run_date AND r.rank <= $k
ORDER BY md5(r.user_id), r.user_id, r.rank;
