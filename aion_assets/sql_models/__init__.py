"""SQL models: SELECT-only `.sql` files in `dbt_like_sql/`, each a DuckDB table built by a Dagster asset."""
