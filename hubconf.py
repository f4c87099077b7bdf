"""PyTorch Hub entrypoints of dlwp: the models of chapter 2 of *Deep Learning with PyTorch*.

    torch.hub.list("org/dlwp")
    model = torch.hub.load("org/dlwp", "resnet101", pretrained=True)
    model.predict("bobby.jpg")

Each entrypoint's docstring (``torch.hub.help``) lists its weight sets and arguments.
"""

dependencies = ["torch", "torchvision", "PIL", "requests", "tqdm", "filelock"]

# the entrypoints (made in dlwp_models.hub from each family's model list; a test checks this list)
from dlwp_models.hub import (  # noqa: E402,F401
    alexnet,
    resnet18,
    resnet34,
    resnet50,
    resnet101,
    resnet152,
    vgg11,
    vgg11_bn,
    vgg13,
    vgg13_bn,
    vgg16,
    vgg16_bn,
    vgg19,
    vgg19_bn,
    densenet121,
    densenet161,
    densenet169,
    densenet201,
    squeezenet1_0,
    squeezenet1_1,
    inception_v3,
    cyclegan,
    neuraltalk2,
)
