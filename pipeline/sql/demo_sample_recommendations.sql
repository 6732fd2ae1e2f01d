-- `mmsr demo`: the first $users users' top-$k recommendations with titles, from the dataset's latest run.
WITH latest AS (
    SELECT max(run_date) AS run_date FROM recommendations WHERE dataset = $dataset
), sample_users AS (
    SELECT DISTINCT r.user_id
    FROM recommendations AS r, latest
    WHERE r.dataset = $dataset AND r.run_date = latest.run_date
    ORDER BY r.user_id
    LIMIT $users
)
SELECT r.user_id, r.rank, r.item_id, r.title, r.score
FROM recommendations_with_items AS r
JOIN sample_users USING (user_id)
JOIN latest USING (run_date)
WHERE r.dataset = $dataset AND r.rank <= $k
ORDER BY r.user_id, r.rank;
