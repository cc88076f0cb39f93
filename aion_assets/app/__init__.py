"""The search app: a local web page and JSON API over the served model version (`aion serve`)."""
