"""The DICOMweb client, without Apache Beam.

- ``endpoint``: base URLs (any server, or a Google store) and the URLs built on them;
- ``auth``: credentials (Google ADC, bearer, basic, none) and pooled sessions;
- ``http``: one request with bounded retries, backoff with jitter and Retry-After;
- ``multipart``: streaming ``multipart/related`` bodies;
- ``stow``, ``stow_response``, ``batching``: STOW-RS batches and their per-instance outcomes;
- ``qido``: QIDO-RS searches paged to completion;
- ``concurrency``: per-process shared resources (one pool per worker).

Nothing here imports Beam; a test checks it in a fresh interpreter.
"""
