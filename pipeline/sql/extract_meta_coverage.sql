-- How many reviewed items the meta file describes (0 means the meta belongs to other data).
SELECT count(DISTINCT i.item_id) AS covered, (SELECT count(DISTINCT item_id) FROM interactions) AS reviewed
FROM interactions i
SEMI JOIN meta m ON m.item_id = i.item_id;
