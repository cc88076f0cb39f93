"""Semantic search: alignment heads, contrastive training, FAISS indexes and retrieval metrics.

The AION-Search method (Koblischke et al. 2025, arXiv:2512.11982). The science modules are plain Python with
no dagster import, so they test fast and the Dagster assets stay thin:

- ``heads``:    ``ProjectionHead``, ``AlignmentHeads``, ``save_heads`` / ``load_heads`` (one safetensors file)
- ``losses``:   ``clip_loss`` (symmetric InfoNCE)
- ``training``: ``TrainConfig``, ``train_alignment`` -> ``TrainResult``, ``embed_images``, ``embed_texts``,
  ``seed_summary``
- ``index``:    ``build_index`` -> ``VectorIndex`` (search / save / load), ``index_recall_at_k``
- ``metrics``:  ``ndcg_at_k``, ``recall_at_k``, ``average_precision_at_k``, ``lift_at_k``, ``evaluate_ranking``,
  ``image_similarity_baseline``, ``random_baseline``, ``random_expectation``, ``expected_average_precision``
- ``evaluation``: the two pools per target (``release``, ``survey``), the training-set exclusion (id and image
  sha256), ``evaluate_all`` -> ``Evaluation`` (figures, what was pooled, the top hits)
- ``artifacts``: versioned heads (with their training set), indexes and the served-version pointer in the lake
- ``versions``: ``list_versions``, ``versions_to_prune`` (what `aion models` and `aion prune` show and do)
- ``plots`` and ``report``: the pictures on the materializations and `aion report`
- ``bench``:    ``bench_search``

Dagster wiring: ``assets`` (training and index groups), ``evaluation_assets`` (retrieval_eval and its checks).

Nothing is imported here: importing torch or faiss costs seconds, and a CLI command should pay only for what
it uses.
"""
