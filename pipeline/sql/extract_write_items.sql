-- items.parquet: item_id, title, brand, categories VARCHAR[], description, image_ref.
COPY (
    SELECT item_id, title, brand, categories, description, image_ref FROM items ORDER BY item_id
) TO $path (FORMAT parquet);
