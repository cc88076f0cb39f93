-- What people search for: each distinct query (case and surrounding spaces folded) per kind of search, how
-- often, how many results it found, how fast it was answered. The benchmark's load is not people searching.
SELECT
    kind,
    lower(trim(query)) AS query,
    count(*) AS searches,
    round(avg(n_results), 2) AS mean_results,
    sum(CASE WHEN n_results = 0 THEN 1 ELSE 0 END) AS searches_without_results,
    round(median(latency_ms), 1) AS p50_latency_ms,
    round(quantile_cont(latency_ms, 0.99), 1) AS p99_latency_ms,
    count(DISTINCT model_version) AS model_versions,
    min(searched_at) AS first_searched_at,
    max(searched_at) AS last_searched_at
FROM search_log
WHERE source <> 'bench'
GROUP BY kind, lower(trim(query))
ORDER BY searches DESC, last_searched_at DESC
