-- Table `items`: the items that survive the k-core and the catalogue-only ones (table
-- `catalogue`, has_interactions false), one row each. Items the
-- meta file does not describe keep NULL text fields. image_ref: a local image from
-- --images wins over the reference (URL or resolved path) in the meta file.
-- $images: Parquet (item_id, path) of the local images folder (empty without one).
CREATE OR REPLACE TABLE items AS
SELECT
    k.item_id,
    m.title,
    m.brand,
    m.categories,
    m.description,
    coalesce(l.path, m.image_ref) AS image_ref,
    m.item_id IS NOT NULL AS has_meta,
    l.path IS NOT NULL AS local_image,
    k.has_interactions
FROM (
    SELECT DISTINCT item_id, true AS has_interactions FROM interactions
    UNION ALL
    SELECT item_id, false AS has_interactions FROM catalogue
) k
LEFT JOIN meta m ON m.item_id = k.item_id
LEFT JOIN read_parquet($images) l ON l.item_id = k.item_id;
