"""Measuring classifiers on labelled photos: reading the data (:mod:`.data`), accuracy and the
confusion matrix (:mod:`.measure`), the model card (:mod:`.card`) and the plots (:mod:`.plots`).
``dlwp evaluate`` and ``dlwp finetune`` use it."""
