"""Fine-tuning a book classifier on the user's own classes (``dlwp finetune``): the feature cache
(:mod:`.features`), the training loops (:mod:`.loop`), the checkpoint and log (:mod:`.state`), the
resulting weight set (:mod:`.output`) and the run (:mod:`.finetune`)."""

from .finetune import UNFREEZE, Finetuned, FinetuneSettings, finetune

__all__ = ["finetune", "FinetuneSettings", "Finetuned", "UNFREEZE"]
