"""What weights exist and where they are (no ``torch.nn`` here).

* :mod:`.manifest` — :class:`FileSpec`, :class:`WeightSet`, the manifest schema and its layering;
* :mod:`.resolve` — the one reading of ``(pretrained, weights, sha256)``;
* :mod:`.integrity` — hashing and checking bytes against pins;
* :mod:`.store` — the cache: layout, records, locks, partial files, derived copies;
* :mod:`.download` — sources, mirrors, retries, resume → a verified :class:`~.store.CachedFile`.
"""
