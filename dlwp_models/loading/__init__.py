"""Bytes to modules, with no network: safe checkpoint reading (:mod:`.checkpoints`), strict
copy-free loading into modules built on ``meta`` (:mod:`.modules`), and weight files read through
their memory-mappable copies (:mod:`.weight_files`)."""
