-- The latest figure for each (target, pool, method, metric), beside the image-similarity baseline and random
-- ranking. Rows written before pools existed count as the `release` pool, the only one there was.
WITH pooled AS (
    SELECT * REPLACE (coalesce(pool, 'release') AS pool) FROM eval_results
),
ranked AS (
    SELECT
        *,
        row_number() OVER (PARTITION BY target, pool, method, metric ORDER BY created_at DESC) AS recency
    FROM pooled
),
latest AS (
    SELECT target, pool, method, metric, value, n_relevant, pool_size, model_version, created_at
    FROM ranked
    WHERE recency = 1
)
SELECT
    l.target,
    l.pool,
    l.metric,
    l.method,
    round(l.value, 4) AS value,
    round(l.value - b.value, 4) AS vs_image_similarity,
    round(l.value / nullif(r.value, 0), 2) AS vs_random,
    l.n_relevant,
    l.pool_size,
    l.model_version,
    l.created_at
FROM latest AS l
LEFT JOIN latest AS b
    ON b.target = l.target AND b.pool = l.pool AND b.metric = l.metric AND b.method = 'image_similarity'
LEFT JOIN latest AS r
    ON r.target = l.target AND r.pool = l.pool AND r.metric = l.metric AND r.method = 'random'
ORDER BY l.target, l.pool, l.metric, l.value DESC
