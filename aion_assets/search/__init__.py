"""Semantic search: alignment heads, contrastive training, FAISS indexes and retrieval metrics.

The AION-Search method (Koblischke et al. 2025, arXiv:2512.11982). The science modules are plain Python with
no dagster import, so they test fast and the Dagster assets stay thin:

- ``heads``:    ``ProjectionHead``, ``AlignmentHeads``, ``save_heads`` / ``load_heads`` (one safetensors file)
- ``losses``:   ``clip_loss`` (symmetric InfoNCE)
- ``training``: ``TrainConfig``, ``train_alignment`` -> ``TrainResult``, ``embed_images``, ``embed_texts``,
  ``seed_summary``
- ``index``:    ``build_index`` -> ``VectorIndex`` (search / save / load), ``index_recall_at_k``
- ``metrics``:  ``ndcg_at_k``, ``recall_at_k``, ``evaluate_ranking``, ``image_similarity_baseline``,
  ``random_baseline``, ``random_expectation``
- ``bench``:    ``bench_search``

Nothing is imported here: importing torch or faiss costs seconds, and a CLI command should pay only for what
it uses.
"""
