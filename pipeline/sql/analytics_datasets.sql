-- datasets the freshly published analytics views cover (for the publish log)
SELECT DISTINCT dataset FROM items ORDER BY dataset;
