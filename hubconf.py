"""PyTorch Hub entrypoints of dlwp: the models of chapter 2 of *Deep Learning with PyTorch*.

    torch.hub.list("org/dlwp")
    model = torch.hub.load("org/dlwp", "resnet101", pretrained=True)
    model.predict("bobby.jpg")

Each entrypoint's docstring (``torch.hub.help``) lists its weight sets and arguments. Every model
is named here once; a test checks this list against the family registry and ``torch.hub.list``.
"""

dependencies = ["torch", "torchvision", "PIL", "requests", "tqdm", "filelock"]

from dlwp_models.hub import entrypoint as _entrypoint  # noqa: E402

# the ImageNet classifiers
alexnet = _entrypoint("alexnet")
resnet18 = _entrypoint("resnet18")
resnet34 = _entrypoint("resnet34")
resnet50 = _entrypoint("resnet50")
resnet101 = _entrypoint("resnet101")
resnet152 = _entrypoint("resnet152")
vgg11 = _entrypoint("vgg11")
vgg11_bn = _entrypoint("vgg11_bn")
vgg13 = _entrypoint("vgg13")
vgg13_bn = _entrypoint("vgg13_bn")
vgg16 = _entrypoint("vgg16")
vgg16_bn = _entrypoint("vgg16_bn")
vgg19 = _entrypoint("vgg19")
vgg19_bn = _entrypoint("vgg19_bn")
densenet121 = _entrypoint("densenet121")
densenet161 = _entrypoint("densenet161")
densenet169 = _entrypoint("densenet169")
densenet201 = _entrypoint("densenet201")
squeezenet1_0 = _entrypoint("squeezenet1_0")
squeezenet1_1 = _entrypoint("squeezenet1_1")
inception_v3 = _entrypoint("inception_v3")

# the CycleGAN horse-to-zebra generator
cyclegan = _entrypoint("cyclegan")

# NeuralTalk2 image captioning
neuraltalk2 = _entrypoint("neuraltalk2")
