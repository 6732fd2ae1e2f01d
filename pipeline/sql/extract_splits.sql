-- Table `splits`: user_idx, split, target_pos (0-based index into sequences.items).
-- Every position >= 1 of a sequence is a target (position 0 has no history); its split
-- is decided by two per-user boundaries, valid_start <= test_start <= n:
--   loo   (n >= 3): valid_start = n-2, test_start = n-1 (one valid, one test target);
--         (n <  3): both = n, so the whole sequence is train.
--   ratio: n_test = floor(0.2 n) (the public code's 80/20), train_len = n - n_test;
--          n_valid = max(1, floor(0.1 train_len)) when train_len >= 3, else 0;
--          test_start = train_len, valid_start = train_len - n_valid.
-- Positions below valid_start are 'train' (every prefix of the train part).
-- $split: 'loo' | 'ratio'.
CREATE OR REPLACE TABLE splits AS
WITH sized AS (
    SELECT user_idx, len(items) AS n, len(items) - len(items) // 5 AS train_len FROM sequences
),
bounds AS (
    SELECT
        user_idx,
        n,
        CASE
            WHEN $split = 'loo' THEN CASE WHEN n >= 3 THEN n - 2 ELSE n END
            WHEN train_len >= 3 THEN train_len - greatest(1, train_len // 10)
            ELSE train_len
        END AS valid_start,
        CASE
            WHEN $split = 'loo' THEN CASE WHEN n >= 3 THEN n - 1 ELSE n END
            ELSE train_len
        END AS test_start
    FROM sized
),
targets AS (
    SELECT user_idx, valid_start, test_start, unnest(range(1, n)) AS pos FROM bounds
)
SELECT
    user_idx,
    CASE WHEN pos < valid_start THEN 'train' WHEN pos < test_start THEN 'valid' ELSE 'test' END AS split,
    pos::INTEGER AS target_pos
FROM targets;
