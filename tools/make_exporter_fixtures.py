#!/usr/bin/env python3
"""The exporter fixtures in tests/data/exporters/: one small network built from
torchvision's blocks (MobileNetV3's HardSwish and HardSigmoid squeeze-excitation,
EfficientNet's SiLU MBConv, ShuffleNetV2's split and channel shuffle, a DenseNet
block and transition, ConvNeXt's channels-last block, LayerNorm2d), exported
from the same weights by PyTorch's TorchScript exporter (dynamo=False, opset 13)
and by its dynamo exporter (the default since PyTorch 2.9: opset 18+, weights as
external data), with float64 references of the same weights: logits, the split
activations at module 'b3', and IG, conductance and IPNA (tools/make_fixtures.py's
formulas) with their condition numbers.

It needs a current PyTorch with onnxscript (CI has Debian's 1.13, which cannot
run the dynamo exporter), so the outputs are committed; run it in a scratch
environment:
    python3 -m venv /tmp/venv && /tmp/venv/bin/pip install torch torchvision onnx onnxscript
    /tmp/venv/bin/python tools/make_exporter_fixtures.py"""
import json
import os
import sys
import warnings

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from export_onnx import randomize_batchnorm  # noqa: E402
from make_fixtures import exact_hardsigmoid, ref_attributions  # noqa: E402

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "exporters")


def tiny_net():
    from torchvision.models.convnext import CNBlock, LayerNorm2d
    from torchvision.models.densenet import _DenseBlock, _Transition
    from torchvision.models.efficientnet import MBConv, MBConvConfig
    from torchvision.models.mobilenetv3 import InvertedResidual, InvertedResidualConfig
    from torchvision.models.shufflenetv2 import InvertedResidual as ShuffleBlock
    from torchvision.ops.misc import Conv2dNormActivation

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = Conv2dNormActivation(3, 16, stride=2, activation_layer=nn.Hardswish)
            self.b1 = InvertedResidual(InvertedResidualConfig(16, 3, 32, 16, True, "HS", 1, 1, 1.0), nn.BatchNorm2d)
            self.b2 = MBConv(MBConvConfig(2, 3, 1, 16, 24, 1), 0.0, nn.BatchNorm2d)
            self.b3 = ShuffleBlock(24, 24, 1)
            self.b4 = _DenseBlock(2, 24, 2, 8, 0.0)
            self.b5 = _Transition(40, 32)
            self.b6 = CNBlock(32, 0.5, 0.0)
            self.norm = LayerNorm2d(32)
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(32, 10)

        def f1(self, x):
            return self.b3(self.b2(self.b1(self.stem(x))))

        def f2(self, h):
            return self.fc(torch.flatten(self.pool(self.norm(self.b6(self.b5(self.b4(h))))), 1))

        def forward(self, x):
            return self.f2(self.f1(x))

    return Tiny()


class Part(nn.Module):
    def __init__(self, net, which):
        super().__init__()
        self.net, self.which = net, which

    def forward(self, x):
        return self.net.f1(x) if self.which == 1 else self.net.f2(x)


def main():
    warnings.filterwarnings("ignore")
    torch.set_default_dtype(torch.float32)  # make_fixtures sets float64 for its references
    torch.manual_seed(3)
    net = tiny_net()
    randomize_batchnorm(net, 3)
    # Both exporters fold BatchNorm into the convolution before it, in float32; with a unit scale
    # (var + eps = 1 exactly, gamma 1) and mean 0 the folded weights are exact, so the float64
    # references of the unfolded network are references of the files. (tools/make_fixtures.py
    # keeps BatchNorm nodes and tests folding with random statistics.)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eps = 2.0 ** -10
            m.running_var.fill_(1.0 - 2.0 ** -10)
            m.running_mean.zero_()
            m.weight.data.fill_(1.0)
    net.eval()
    shape = (3, 32, 32)
    x32 = torch.zeros(1, *shape)
    for name, dynamo, opset in (("torchscript", False, 13), ("dynamo", True, 18)):
        d = os.path.join(OUT, name)
        os.makedirs(d, exist_ok=True)
        for f in os.listdir(d):
            os.remove(os.path.join(d, f))
        kwargs = {"dynamo": dynamo, "opset_version": opset}
        if dynamo:
            kwargs["external_data"] = True
        else:
            kwargs.update(input_names=["input"], output_names=["logits"], do_constant_folding=True)
        torch.onnx.export(net, (x32,), os.path.join(d, "model.onnx"), **kwargs)
        print("exported", name, sorted(os.listdir(d)))

    exact_hardsigmoid(net)
    net = net.double().eval()
    for p in net.parameters():
        p.requires_grad_(False)
    f1, f2 = Part(net, 1), Part(net, 2)
    g = torch.Generator().manual_seed(7)
    x = torch.randn(1, *shape, generator=g, dtype=torch.float64)
    x0 = torch.zeros(1, *shape, dtype=torch.float64)
    with torch.no_grad():
        h = f1(x)
        logits = f2(h)
    y = int(torch.argsort(logits[0], descending=True)[1])
    steps, boxes = 16, [[8, 10, 20, 30], [0, 0, 16, 16]]
    kappa = {}
    ig, cond, ipna, fx, fx0 = ref_attributions(f1, f2, x, x0, y, steps, boxes, "logit", kappa=kappa)
    np.save(os.path.join(OUT, "x.npy"), x[0].numpy())
    np.save(os.path.join(OUT, "logits.npy"), logits[0].numpy())
    np.save(os.path.join(OUT, "h.npy"), h[0].numpy())
    np.save(os.path.join(OUT, "ref_ig.npy"), ig.numpy())
    np.save(os.path.join(OUT, "ref_cond.npy"), cond.numpy())
    for i, a in enumerate(ipna):
        np.save(os.path.join(OUT, "ref_ipna%d.npy" % i), a.numpy())
    meta = {"torch": torch.__version__, "split": "b3", "class": y, "steps": steps, "boxes": boxes, "target": "logit",
            "baseline": "zeros", "F_x": fx, "F_x0": fx0, "kappa": kappa}
    with open(os.path.join(OUT, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print("references for class %d, F(x) = %.6f (torch %s)" % (y, fx, torch.__version__))


if __name__ == "__main__":
    main()
