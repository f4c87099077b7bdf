"""One package per model family: its ``nn.Module`` classes, its format adapter and its
:class:`~.family.Family` (how the one builder in :mod:`dlwp_models.hub` builds it)."""
