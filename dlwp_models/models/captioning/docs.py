"""The neuraltalk2 entrypoint's name and docstring (what ``torch.hub.help`` shows), apart from the
network code so that listing the entrypoints imports none of it."""

__all__ = ["MODELS", "DOC"]

#: the entrypoint this family provides
MODELS = ("neuraltalk2",)

DOC = """NeuralTalk2 image captioning (Karpathy & Fei-Fei 2015), the "FC" model of
    ImageCaptioning.pytorch trained on MS-COCO, as run in chapter 2 of *Deep Learning with
    PyTorch*: a Caffe-layout ResNet-101 encodes the image (at its own size), a maxout LSTM writes
    the sentence, and beam search (size 2) picks it exactly as upstream does.

    Weight sets (``weights/manifest.json``):
        ``neuraltalk2.coco_fc`` (default): the book's files from deep-learning-with-pytorch/
        ImageCaptioning.pytorch, pinned by commit and git blob SHA-1: the encoder
        (``resnet101a.pth`` + ``resnet101b.pth``, joined), the decoder (``fc-model.pth``) and the
        vocabulary (``fc-infos.pkl``, 9,487 words, read with a restricted unpickler).

    Args:
        pretrained (bool): load the default weight set. Default False: random weights and a
            placeholder vocabulary (``w1`` … ``w9486``, ``UNK``), which captions without error but
            says nothing meaningful.
        weights (str | None): a weight-set tag or name (``"coco_fc"``, ``"neuraltalk2.coco_fc"``,
            ``"DEFAULT"``). Default None.
        progress (bool): show download progress bars. Default True.
        map_location: where the loaded tensors go, as for ``torch.load`` (e.g. ``"cuda"``).
            Default None: the CPU (the published decoder file holds CUDA tensors).

    Returns:
        a :class:`NeuralTalk2` in eval mode with ``.caption(inputs, *, beam_size=2, sample=False,
        temperature=1.0, max_length=16, beam_select="first", max_side=2048)`` → str (or a list),
        ``.transforms``, ``.vocab`` and ``.weights``.

    Example::

        captioner = torch.hub.load("org/dlwp", "neuraltalk2", pretrained=True)
        captioner.caption("horse.jpg")                       # 'a person riding a horse on a beach'
        captioner.caption(["a.jpg", "b.jpg"], beam_size=3)   # one sentence per image
    """
