-- Headline counts of the extracted dataset for the run report.
SELECT
    (SELECT count(*) FROM interactions) AS interactions,
    (SELECT count(DISTINCT user_id) FROM interactions) AS users,
    (SELECT count(*) FROM items) AS items,
    (SELECT count(*) FILTER (WHERE NOT has_interactions) FROM items) AS catalogue_only_items,
    (SELECT count(*) FILTER (WHERE has_meta) FROM items) AS items_with_meta,
    (SELECT count(*) FILTER (WHERE local_image) FROM items) AS items_with_local_image,
    (SELECT count(*) FILTER (WHERE image_ref IS NOT NULL) FROM items) AS items_with_image_ref,
    (SELECT count(*) FROM id_index WHERE kind = 'user') AS user_index_size,
    (SELECT count(*) FROM id_index WHERE kind = 'item') AS item_index_size;
