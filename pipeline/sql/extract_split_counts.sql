-- Target rows per split for the run report.
SELECT split, count(*) AS n FROM splits GROUP BY split ORDER BY split;
