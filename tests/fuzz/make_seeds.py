#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (tests/fuzz/corpus/<target>/):
small valid files of every kind each loader reads, and the hostile files that
once crashed or exhausted it (kept as regression inputs, named crash-*). The
files are committed; rerun this only to regenerate them.
    /usr/bin/python3 tests/fuzz/make_seeds.py"""
import gzip
import io
import os
import struct

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
rng = np.random.default_rng(0)


def put(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ---------------------------------------------------------------- ONNX
def init(name, arr):
    return numpy_helper.from_array(np.asarray(arr), name)


def model(nodes, inits, inp=(1, 2, 6, 6), out="logits", extra_inputs=()):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N"] + list(inp[1:]))
    y = helper.make_tensor_value_info(out, TensorProto.FLOAT, None)
    g = helper.make_graph(nodes, "g", [x, *extra_inputs], [y], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 7
    return m.SerializeToString()


w = lambda *s: rng.standard_normal(s).astype(np.float32) * 0.3
I = lambda *v: np.array(v, dtype=np.int64)

conv_bn = model(
    [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
     helper.make_node("BatchNormalization", ["c", "g", "be", "m", "v"], ["bn"], name="bn"),
     helper.make_node("Relu", ["bn"], ["r"], name="relu"),
     helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1, name="pool"),
     helper.make_node("GlobalAveragePool", ["p"], ["gap"]),
     helper.make_node("Flatten", ["gap"], ["f"]),
     helper.make_node("Gemm", ["f", "fc", "fcb"], ["z"], transB=1),
     helper.make_node("Softmax", ["z"], ["logits"])],
    [init("w", w(3, 2, 3, 3)), init("b", w(3)), init("g", w(3) + 1), init("be", w(3)), init("m", w(3)),
     init("v", np.abs(w(3)) + 0.5), init("fc", w(4, 3)), init("fcb", w(4))])
put("onnx", "seed-conv-bn-pool-gemm.onnx", conv_bn)

# Pad through folded shape arithmetic, AveragePool, Reshape to [N,-1] through
# Shape/Gather/Unsqueeze/Transpose/Squeeze/Cast/Concat: every folded op on the live path.
fold = model(
    [helper.make_node("Shape", ["x"], ["s"]),
     helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
     helper.make_node("Unsqueeze", ["n", "ax0"], ["n1"]),
     helper.make_node("Transpose", ["m"], ["mt"], perm=[1, 0]),
     helper.make_node("Squeeze", ["mt", "ax0"], ["msq"]),
     helper.make_node("Cast", ["msq"], ["minus1"], to=TensorProto.INT64),
     helper.make_node("Concat", ["n1", "minus1"], ["shape"], axis=0),
     helper.make_node("ConstantOfShape", ["two"], ["zeros2"], value=helper.make_tensor("v", TensorProto.INT64, [1], [0])),
     helper.make_node("Slice", ["padsrc", "st", "en", "ax0", "one"], ["tailpads"]),
     helper.make_node("Concat", ["zeros2", "tailpads"], ["pads"], axis=0),
     helper.make_node("Pad", ["x", "pads"], ["xp"], mode="constant"),
     helper.make_node("Conv", ["xp", "w"], ["c"], name="conv"),
     helper.make_node("AveragePool", ["c"], ["a"], kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 1, 1],
                      count_include_pad=1),
     helper.make_node("Reshape", ["a", "shape"], ["flat"]),
     helper.make_node("MatMul", ["flat", "fc"], ["mm"]),
     helper.make_node("Add", ["mm", "bias"], ["logits"])],
    [init("zero", np.array(0, np.int64)), init("ax0", I(0)), init("m", np.array([[-1]], np.float32)), init("two", I(2)),
     init("padsrc", I(9, 1, 2, 0, 0, 2, 1, 9)), init("st", I(1)), init("en", I(7)), init("one", I(1)),
     init("w", w(3, 2, 3, 3)), init("fc", w(3 * 4 * 4, 5)), init("bias", w(5))])
put("onnx", "seed-pad-fold-reshape.onnx", fold)

residual = model(
    [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
     helper.make_node("Relu", ["c1"], ["r1"]),
     helper.make_node("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], group=2),
     helper.make_node("Add", ["c2", "x"], ["s"]),
     helper.make_node("Clip", ["s", "lo", "hi"], ["r2"]),
     helper.make_node("Dropout", ["r2"], ["d"]),
     helper.make_node("Identity", ["d"], ["i"]),
     helper.make_node("GlobalAveragePool", ["i"], ["gap"]),
     helper.make_node("Flatten", ["gap"], ["f"]),
     helper.make_node("Gemm", ["f", "fc"], ["logits"])],
    [init("w1", w(2, 2, 3, 3)), init("w2", w(2, 1, 3, 3)), init("lo", np.float32(0)), init("hi", np.float32(6)),
     init("fc", w(2, 3))])
put("onnx", "seed-residual-clip.onnx", residual)


# Squeeze-excitation (Sigmoid gate, HardSwish from HardSigmoid + Mul), Concat, Split, a tensor Add.
put("onnx", "seed-se-concat-split.onnx", model(
    [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
     helper.make_node("GlobalAveragePool", ["c"], ["g"]),
     helper.make_node("Conv", ["g", "wg"], ["gc"]),
     helper.make_node("Sigmoid", ["gc"], ["gate"]),
     helper.make_node("Mul", ["c", "gate"], ["se"]),
     helper.make_node("HardSigmoid", ["se"], ["hs"], alpha=1.0 / 6, beta=0.5),
     helper.make_node("Mul", ["se", "hs"], ["hsw"]),
     helper.make_node("Concat", ["hsw", "c"], ["cat"], axis=1),
     helper.make_node("Split", ["cat", "halves"], ["s0", "s1"], axis=1),
     helper.make_node("Add", ["s0", "s1"], ["sum"]),
     helper.make_node("ReduceMean", ["sum"], ["mean"], axes=[2, 3], keepdims=0),
     helper.make_node("Gemm", ["mean", "fc"], ["logits"])],
    [init("w", w(4, 2, 3, 3)), init("wg", w(4, 4, 1, 1)), init("halves", I(4, 4)), init("fc", w(4, 3))]))

# A channels-last block as old exporters write it: Transpose, the LayerNorm and GELU decompositions,
# MatMul (a 1x1 convolution), Transpose back, a residual Add; then a channel shuffle and a channel slice.
half, sqrt2 = np.array(0.5, np.float32), np.array(np.sqrt(2), np.float32)
put("onnx", "seed-channels-last-shuffle.onnx", model(
    [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
     helper.make_node("Transpose", ["c"], ["t"], perm=[0, 2, 3, 1]),
     helper.make_node("ReduceMean", ["t"], ["m"], axes=[-1]),
     helper.make_node("Sub", ["t", "m"], ["d"]),
     helper.make_node("Pow", ["d", "two"], ["p"]),
     helper.make_node("ReduceMean", ["p"], ["v"], axes=[-1]),
     helper.make_node("Add", ["v", "eps"], ["ve"]),
     helper.make_node("Sqrt", ["ve"], ["sd"]),
     helper.make_node("Div", ["d", "sd"], ["n"]),
     helper.make_node("Mul", ["n", "gamma"], ["ng"]),
     helper.make_node("Add", ["ng", "beta"], ["ln"]),
     helper.make_node("MatMul", ["ln", "w1"], ["h1"]),
     helper.make_node("Div", ["h1", "sqrt2"], ["h1s"]),
     helper.make_node("Erf", ["h1s"], ["e"]),
     helper.make_node("Add", ["e", "one"], ["e1"]),
     helper.make_node("Mul", ["h1", "e1"], ["gm"]),
     helper.make_node("Mul", ["gm", "half"], ["gelu"]),
     helper.make_node("MatMul", ["gelu", "w2"], ["h2"]),
     helper.make_node("Transpose", ["h2"], ["back"], perm=[0, 3, 1, 2]),
     helper.make_node("Add", ["back", "c"], ["res"]),
     helper.make_node("Reshape", ["res", "grouped"], ["r5"]),
     helper.make_node("Transpose", ["r5"], ["r5t"], perm=[0, 2, 1, 3, 4]),
     helper.make_node("Reshape", ["r5t", "flat4"], ["shuf"]),
     helper.make_node("Slice", ["shuf", "st", "en", "ax1"], ["sl"]),
     helper.make_node("GlobalAveragePool", ["sl"], ["gap"]),
     helper.make_node("Flatten", ["gap"], ["f"]),
     helper.make_node("Gemm", ["f", "fc"], ["logits"])],
    [init("w", w(4, 2, 3, 3)), init("two", np.array(2, np.float32)), init("eps", np.array(1e-6, np.float32)),
     init("gamma", w(4) + 1), init("beta", w(4)), init("w1", w(4, 8)), init("sqrt2", sqrt2),
     init("one", np.array(1, np.float32)), init("half", half), init("w2", w(8, 4)), init("grouped", I(1, 2, 2, 6, 6)),
     init("flat4", I(1, -1, 6, 6)), init("st", I(1)), init("en", I(3)), init("ax1", I(1)), init("fc", w(2, 3))]))


def crash(name, nodes, inits, **kw):
    put("onnx", "crash-" + name + ".onnx", model(nodes, inits, **kw))


shape_chain = [helper.make_node("Shape", ["x"], ["s"])]
tail = lambda src: [helper.make_node("Reshape", ["x", src], ["f"]), helper.make_node("Gemm", ["f", "fc"], ["logits"])]
fc = init("fc", w(72, 3))
crash("gather-index", shape_chain + [helper.make_node("Gather", ["s", "idx"], ["g"], axis=0),
                                     helper.make_node("Concat", ["g", "minus1"], ["shape"], axis=0)] + tail("shape"),
      [init("idx", I(10)), init("minus1", I(-1)), fc])
crash("slice-step0", shape_chain + [helper.make_node("Slice", ["s", "st", "en", "ax", "zero"], ["shape"])] + tail("shape"),
      [init("st", I(0)), init("en", I(2)), init("ax", I(0)), init("zero", I(0)), fc])
crash("transpose-repeat", [helper.make_node("Transpose", ["m"], ["mt"], perm=[0, 0]),
                           helper.make_node("Cast", ["mt"], ["shape"], to=TensorProto.INT64)] + tail("shape"),
      [init("m", np.array([[1, -1]], np.float32)), fc])
crash("unsqueeze-axis", shape_chain + [helper.make_node("Unsqueeze", ["s", "ax"], ["shape"])] + tail("shape"),
      [init("ax", I(7)), fc])
crash("concat-axis", shape_chain + [helper.make_node("Concat", ["s", "s"], ["shape"], axis=5)] + tail("shape"), [fc])
crash("gather-axis", shape_chain + [helper.make_node("Gather", ["s", "idx"], ["shape"], axis=3)] + tail("shape"),
      [init("idx", I(0)), fc])
crash("constantofshape-huge", [helper.make_node("ConstantOfShape", ["big"], ["z"]),
                               helper.make_node("Shape", ["z"], ["shape"])] + tail("shape"),
      [init("big", I(1 << 20, 1 << 20, 1 << 20)), fc])
big = onnx.TensorProto()
big.name, big.data_type = "fc", TensorProto.FLOAT
big.dims.extend([1 << 40, 1 << 40])
crash("initializer-dims", [helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("Gemm", ["f", "fc"], ["logits"])],
      [big])
no_out = helper.make_node("Relu", ["x"], [])
crash("node-without-output", [no_out, helper.make_node("Flatten", ["x"], ["f"]),
                              helper.make_node("Gemm", ["f", "fc"], ["logits"])], [fc])
crash("conv-missing-weight", [helper.make_node("Conv", ["x"], ["c"]), helper.make_node("Flatten", ["c"], ["f"]),
                              helper.make_node("Gemm", ["f", "fc"], ["logits"])], [fc])
crash("reshape-infer", shape_chain + [helper.make_node("Reshape", ["s", "bad"], ["shape"])] + tail("shape"),
      [init("bad", I(-1, -1)), fc])
# A dead node (feeding nothing) with an out-of-range index: must load, since it is never evaluated.
put("onnx", "seed-dead-node.onnx", model(
    [helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Gather", ["s", "idx"], ["dead"], axis=0),
     helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("Gemm", ["f", "fc"], ["logits"])],
    [init("idx", I(99)), fc]))

# ---------------------------------------------------------------- .npy
def npy(arr, version=(1, 0)):
    b = io.BytesIO()
    np.lib.format.write_array(b, arr, version=version)
    return b.getvalue()


put("npy", "seed-f4.npy", npy(rng.standard_normal((3, 4, 4)).astype(np.float32)))
put("npy", "seed-f8-batch.npy", npy(rng.standard_normal((1, 2, 3, 3))))
put("npy", "seed-v2.npy", npy(np.arange(6, dtype=np.float32), version=(2, 0)))
put("npy", "seed-scalar.npy", npy(np.float64(3.5)))


def raw_npy(header, data=b"", version=1):
    h = header.encode()
    if version == 1:
        return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(h)) + h + data
    return b"\x93NUMPY\x02\x00" + struct.pack("<I", len(h)) + h + data


put("npy", "crash-header-length.npy", b"\x93NUMPY\x02\x00\xff\xff\xff\xff")  # 12 bytes claiming a 4 GB header
put("npy", "crash-claims-2e9.npy",
    raw_npy("{'descr': '<f8', 'fortran_order': False, 'shape': (2000000000,), }".ljust(117) + "\n", b"\0" * 64))
put("npy", "crash-negative-shape.npy", raw_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (-5,), }\n"))
put("npy", "crash-text-shape.npy", raw_npy("{'descr': '<f4', 'fortran_order': False, 'shape': ('a',), }\n"))
put("npy", "crash-overflow-shape.npy",
    raw_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999, 3), }\n"))
put("npy", "crash-product-overflow.npy",
    raw_npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2000000000, 2000000000, 2000000000), }\n"))

# ---------------------------------------------------------------- IDX
def idx_images(n, r, c):
    return struct.pack(">IIII", 0x803, n, r, c) + rng.integers(0, 255, n * r * c, dtype=np.uint8).tobytes()


put("idx", "seed-images.idx", idx_images(3, 4, 4))
put("idx", "seed-images.idx.gz", gzip.compress(idx_images(2, 5, 3), mtime=0))
put("idx", "seed-labels.idx", struct.pack(">II", 0x801, 5) + bytes([1, 2, 3, 4, 5]))
put("idx", "seed-labels.idx.gz", gzip.compress(struct.pack(">II", 0x801, 3) + bytes([9, 0, 7]), mtime=0))
full = gzip.compress(idx_images(20, 28, 28), mtime=0)
put("idx", "crash-truncated-download.idx.gz", full[: len(full) // 2])
put("idx", "crash-huge-dims.idx", struct.pack(">IIII", 0x803, 0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF) + b"\0" * 16)
put("idx", "crash-negative-dims.idx", struct.pack(">IIii", 0x803, 2, -28, 28) + b"\0" * 16)
put("idx", "crash-labels-huge.idx", struct.pack(">II", 0x801, 0xFFFFFFFF) + b"\1\2")

# ---------------------------------------------------------------- images
def png(img, **kw):
    b = io.BytesIO()
    img.save(b, "PNG", **kw)
    return b.getvalue()


def jpeg(img, **kw):
    b = io.BytesIO()
    img.save(b, "JPEG", **kw)
    return b.getvalue()


rgb = Image.fromarray(rng.integers(0, 255, (6, 8, 3), dtype=np.uint8))
put("image", "seed-rgb.png", png(rgb))
put("image", "seed-gray.png", png(rgb.convert("L")))
put("image", "seed-rgba.png", png(rgb.convert("RGBA")))
put("image", "seed-palette.png", png(rgb.convert("P")))
put("image", "seed-gray16.png", png(Image.fromarray((rng.integers(0, 65535, (5, 7))).astype(np.uint16))))
put("image", "seed-rgb.jpg", jpeg(rgb, quality=90))
put("image", "seed-gray.jpg", jpeg(rgb.convert("L")))
put("image", "seed-progressive.jpg", jpeg(rgb, progressive=True))
big = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
j = jpeg(big, quality=80)
put("image", "crash-truncated.jpg", j[: len(j) // 2])
# A small JPEG whose SOF claims 20000x20000 pixels.
sof = j.find(b"\xff\xc0")
put("image", "crash-claims-20000x20000.jpg", j[: sof + 5] + struct.pack(">HH", 20000, 20000) + j[sof + 9:])
# A 70-byte 16-bit PGM (stb_image reads past its buffer on such files) and a 22-byte TGA claiming 679 Mpx.
put("image", "crash-pgm16.pgm", (b"P5\n4 4\n65535\n" + b"\xff" * 57)[:70])
put("image", "crash-tga-huge.tga", struct.pack("<BBBHHBHHHHBB", 0, 0, 2, 0, 0, 0, 0, 0, 65535, 10360, 24, 0) + b"\0" * 4)
print("seeds written under", os.path.join(HERE, "corpus"))
