"""The result of a classifier's ``predict``: the top-k ``(label, percent)`` pairs of one image."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["Prediction"]


class Prediction(list):
    """Top-k ``(label, percent)`` pairs for one image, best first; percent = softmax × 100.

    It is a list of plain tuples, so it compares equal to one (``pred == [("golden retriever",
    96.29...), ...]``), indexes and unpacks like one, and its ``repr`` is the list's. ``print`` shows
    a table::

        rank  label               percent
           1  golden retriever     96.29 %
           2  Labrador retriever    2.81 %
    """

    #: the category index of each label, best first, when the classifier gave them (``predict``
    #: does); labels need not be unique (ImageNet has two "crane"s), indices are
    indices: list[int] | None

    def __init__(self, pairs: Iterable[tuple[str, float]] = (), indices: Iterable[int] | None = None) -> None:
        super().__init__((str(label), float(percent)) for label, percent in pairs)
        self.indices = None if indices is None else [int(i) for i in indices]
        if self.indices is not None and len(self.indices) != len(self):
            raise ValueError(f"got {len(self)} labels but {len(self.indices)} indices; pass one index per label.")

    @property
    def labels(self) -> list[str]:
        """The labels, best first."""
        return [label for label, _ in self]

    @property
    def percents(self) -> list[float]:
        """The percentages, best first."""
        return [percent for _, percent in self]

    def __str__(self) -> str:
        if not self:
            return "(no labels)"
        width = max(len("label"), *(len(label) for label in self.labels))
        lines = [f"rank  {'label'.ljust(width)}  percent"]
        for rank, (label, percent) in enumerate(self, start=1):
            lines.append(f"{rank:>4}  {label.ljust(width)}  {percent:6.2f} %")
        return "\n".join(lines)

    def __reduce__(self):  # pickle as a Prediction, not via list's item protocol alone
        return (type(self), (list(self), self.indices))
