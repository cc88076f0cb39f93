-- The latest figure for each (target, method, metric), beside the image-similarity baseline and random ranking.
WITH ranked AS (
    SELECT
        *,
        row_number() OVER (PARTITION BY target, method, metric ORDER BY created_at DESC) AS recency
    FROM eval_results
),
latest AS (
    SELECT target, method, metric, value, n_relevant, pool_size, model_version, created_at
    FROM ranked
    WHERE recency = 1
)
SELECT
    l.target,
    l.metric,
    l.method,
    round(l.value, 4) AS value,
    round(l.value - b.value, 4) AS vs_image_similarity,
    l.n_relevant,
    l.pool_size,
    l.model_version,
    l.created_at
FROM latest AS l
LEFT JOIN latest AS b
    ON b.target = l.target AND b.metric = l.metric AND b.method = 'image_similarity'
ORDER BY l.target, l.metric, l.value DESC
