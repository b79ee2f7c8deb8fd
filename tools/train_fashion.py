#!/usr/bin/python3
"""Train the original's small Fashion-MNIST CNN and export it for ipna-fast.

  /usr/bin/python3 tools/train_fashion.py [--epochs 12] [--out models/fashion_cnn.onnx]

Net (SPEC.md): conv 5x5 -> relu -> maxpool -> conv 5x5 (10 channels) -> relu -> maxpool ->
fc 160->64 -> relu -> fc 64->10; inputs in [0,1], 28x28 gray. The split tensor 'hidden' is the
64 ReLU units (the original's neurons). Reads Debian's dataset-fashion-mnist IDX files. Writes the
ONNX model and a JSON beside it with the test accuracy, overall and per class.
"""
import argparse
import gzip
import json
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from export_onnx import export_split  # noqa: E402

DATA = "/usr/share/datasets/fashion-mnist"
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]


def idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * dims).reshape(shape)


def nets():
    f1 = nn.Sequential(nn.Conv2d(1, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(16, 10, 5), nn.ReLU(),
                       nn.MaxPool2d(2), nn.Flatten(), nn.Linear(160, 64), nn.ReLU())
    f2 = nn.Sequential(nn.Linear(64, 10))
    return f1, f2


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--out", default="models/fashion_cnn.onnx")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    torch.set_num_threads(os.cpu_count() or 1)
    xtr = torch.from_numpy(idx(DATA + "/train-images-idx3-ubyte.gz").astype(np.float32) / 255).unsqueeze(1)
    ytr = torch.from_numpy(idx(DATA + "/train-labels-idx1-ubyte.gz").astype(np.int64))
    xte = torch.from_numpy(idx(DATA + "/t10k-images-idx3-ubyte.gz").astype(np.float32) / 255).unsqueeze(1)
    yte = torch.from_numpy(idx(DATA + "/t10k-labels-idx1-ubyte.gz").astype(np.int64))
    f1, f2 = nets()
    model = nn.Sequential(f1, f2)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, a.epochs)
    for ep in range(a.epochs):
        model.train()
        perm = torch.randperm(len(xtr))
        for i in range(0, len(xtr), 128):
            b = perm[i:i + 128]
            loss = F.cross_entropy(model(xtr[b]), ytr[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
        model.eval()
        with torch.no_grad():
            acc = (model(xte).argmax(1) == yte).float().mean().item()
        print("epoch %d test accuracy %.4f" % (ep + 1, acc), flush=True)
    model.eval()
    with torch.no_grad():
        pred = model(xte).argmax(1)
    per_class = {CLASSES[c]: (pred[yte == c] == c).float().mean().item() for c in range(10)}
    acc = (pred == yte).float().mean().item()
    export_split(f1, f2, (1, 28, 28), "hidden", a.out, torchscript=False)
    meta = {"test_accuracy": acc, "per_class_accuracy": per_class, "classes": CLASSES, "split": "hidden",
            "epochs": a.epochs, "seed": a.seed, "torch": torch.__version__}
    with open(a.out.rsplit(".", 1)[0] + ".json", "w") as f:
        json.dump(meta, f, indent=1)
    print("wrote %s: test accuracy %.4f" % (a.out, acc))


if __name__ == "__main__":
    main()
