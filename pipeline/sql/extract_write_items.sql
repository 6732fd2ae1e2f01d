-- items.parquet: item_id, title, brand, categories VARCHAR[], description, image_ref,
-- has_interactions (false: a catalogue-only item, see setting catalogue_items).
COPY (
    SELECT item_id, title, brand, categories, description, image_ref, has_interactions
    FROM items ORDER BY item_id
) TO $path (FORMAT parquet);
