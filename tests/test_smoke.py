import torch

from edgecnn import zoo
from edgecnn.build import count_params


def test_resnet20_params_and_forward():
    model = zoo.create("resnet20_cifar")
    assert count_params(model) == 269_722
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
