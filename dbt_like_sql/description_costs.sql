-- What the descriptions cost, per describer, model and prompt version.
SELECT
    describer,
    model,
    prompt_version,
    count(*) AS descriptions,
    sum(input_tokens) AS input_tokens,
    sum(output_tokens) AS output_tokens,
    round(sum(cost_usd), 4) AS cost_usd,
    round(sum(cost_usd) / nullif(count(*), 0), 6) AS cost_per_description_usd,
    min(created_at) AS first_created_at,
    max(created_at) AS last_created_at
FROM descriptions
GROUP BY describer, model, prompt_version
ORDER BY last_created_at DESC
