#!/usr/bin/python3
"""Models for the CPU benchmarks: ONNX for ipna-fast and TorchScript (whole,
f1, f2) of the same weights for the LibTorch baseline, plus an input."""
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools"))
from export_onnx import (export_split, family_of, pretrained_efficientnet_lite0, randomize_batchnorm,  # noqa: E402
                         split_stages, stages_of)
from make_fixtures import lenet  # noqa: E402

torch.set_default_dtype(torch.float32)  # make_fixtures switches it to float64 on import

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
torch.manual_seed(0)
import torchvision  # noqa: E402

cases = []
for name, size in (("resnet18", 112), ("resnet18", 224), ("resnet152", 224)):
    m = getattr(torchvision.models, name)()
    randomize_batchnorm(m)
    m.eval()
    f1, f2 = split_stages(stages_of(m, "resnet"), "layer2")
    cases.append((name + "_%d" % size, f1, f2, (3, size, size), "layer2"))
m = pretrained_efficientnet_lite0().eval()  # the README's ImageNet example, pretrained (PyPI wheel)
f1, f2 = split_stages(stages_of(m, family_of("efficientnet_lite0")), "blocks.7")
cases.append(("efficientnet_lite0_224", f1, f2, (3, 224, 224), "blocks.7"))
f1, f2, shape, split = lenet()
cases.append(("lenet", f1.float().eval(), f2.float().eval(), shape, split))
for name, f1, f2, shape, split in cases:
    d = os.path.join(out, name)
    if os.path.exists(os.path.join(d, "x.npy")):
        continue
    os.makedirs(d, exist_ok=True)
    export_split(f1, f2, shape, split, os.path.join(d, "model.onnx"), torchscript=True)
    x = np.random.default_rng(0).standard_normal(shape)
    if shape[0] == 1:
        x = np.clip(np.abs(x), 0, 1)
    np.save(os.path.join(d, "x.npy"), x.astype(np.float32))
    print("bench model", name, flush=True)
