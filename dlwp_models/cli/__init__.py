"""The command-line layer: ``python -m dlwp_models`` (:mod:`.main`), publishing (:mod:`.publish`,
:mod:`.github`) and export (:mod:`.export`). Nothing in the package imports it."""
