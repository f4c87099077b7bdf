"""The cyclegan entrypoint's name and docstring (what ``torch.hub.help`` shows), apart from the
network code so that listing the entrypoints imports none of it."""

__all__ = ["MODELS", "DOC"]

#: the entrypoint this family provides
MODELS = ("cyclegan",)

DOC = """CycleGAN horse→zebra generator (Zhu et al. 2017), as run in chapter 2 of *Deep Learning
    with PyTorch*: a ResNet generator with 9 residual blocks (11.4 M parameters).

    Weight sets (``weights/manifest.json``):
        ``cyclegan.horse2zebra`` (default): the book's ``horse2zebra_0.4.0.pth`` (junyanz's
        pretrained horse2zebra generator), pinned by commit and git blob SHA-1.

    Args:
        pretrained (bool): load the default weight set (horse2zebra). Default False: random weights.
        weights (str | PathLike | None): a weight-set tag or name (``"horse2zebra"``,
            ``"cyclegan.horse2zebra"``, ``"DEFAULT"``), or the path of a local generator file in
            the book's layout or junyanz's (e.g. his zebra2horse or monet2photo
            ``latest_net_G.pth``), or an https URL of such a file together with ``sha256=``; a file
            implies pretrained. Default None.
        progress (bool): show a download progress bar. Default True.
        map_location: passed to ``torch.load`` (e.g. ``"cpu"`` or ``"cuda"``). Default None.
        sha256 (str | None): the full sha256 of the file when ``weights`` is a URL (required
            then, refused otherwise).

    Returns:
        the :class:`ResNetGenerator` in eval mode, with ``.weights``, ``.transforms`` and
        ``.translate(inputs, *, size=256, preset="trained")`` → PIL image (or a list).

    Example::

        model = torch.hub.load("org/dlwp", "cyclegan", pretrained=True)
        zebra = model.translate("horse.jpg")                 # [-1, 1] input, as trained
        book = model.translate("horse.jpg", preset="book")   # [0, 1] input, the book's figure
    """
