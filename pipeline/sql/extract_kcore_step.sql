-- One round of the iterative k-core filter: drop every interaction of a user or an item
-- with fewer than $k interactions. The caller repeats it until a round deletes nothing.
DELETE FROM interactions
WHERE user_id IN (SELECT user_id FROM interactions GROUP BY user_id HAVING count(*) < $k)
   OR item_id IN (SELECT item_id FROM interactions GROUP BY item_id HAVING count(*) < $k);
