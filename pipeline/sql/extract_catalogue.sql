-- Table `catalogue`: meta items that no (k-core surviving) interaction holds but that have
-- content to be scored by (a title, a description or an image reference). Empty unless
-- $enabled (setting catalogue_items): a content-aware champion can then recommend them.
CREATE OR REPLACE TABLE catalogue AS
SELECT m.item_id
FROM meta m
ANTI JOIN (SELECT DISTINCT item_id FROM interactions) i ON i.item_id = m.item_id
WHERE $enabled AND (m.title IS NOT NULL OR m.description IS NOT NULL OR m.image_ref IS NOT NULL);
