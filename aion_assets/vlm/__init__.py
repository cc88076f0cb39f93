"""The vision-language-model layer: describe cutouts (recorded or live Anthropic), re-rank search results.

Pure modules (prompts, render, describers, store, rerank, bench, fake_server) never import dagster; the Dagster
wiring is in assets.py, resources.py and defs.py.
"""
