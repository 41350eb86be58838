"""Face-recognition-shaped PyTorch networks exported to ONNX, for the importer's tests.

No insightface pack can be downloaded here, so the tests build equivalents:
the reference iResNet of tests/torch_iresnet.py (what buffalo_l's
w600k_r50.onnx is), a MobileFaceNet-shaped network with depthwise
convolutions and a global depthwise (GDC) head (buffalo_s's w600k_mbf.onnx),
and a wrapper whose graph normalises its own input with Sub and Mul (the
older insightface/MXNet exports). `export` writes them with the options the
packs differ in: opset, dynamic batch axis, BatchNormalization nodes kept or
folded into the convolutions, fp16 initializers.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn


class _ConvBnPrelu(nn.Sequential):
    def __init__(self, cin: int, cout: int, *, kernel: int = 1, stride: int = 1,
                 groups: int = 1, padding: int | None = None, act: bool = True):
        padding = kernel // 2 if padding is None else padding
        layers = [nn.Conv2d(cin, cout, kernel, stride, padding, groups=groups, bias=False),
                  nn.BatchNorm2d(cout)]
        if act:
            layers.append(nn.PReLU(cout))
        super().__init__(*layers)


class _Bottleneck(nn.Module):
    """MobileNetV2's inverted residual: 1x1 expand, 3x3 depthwise, 1x1 project."""

    def __init__(self, cin: int, cout: int, *, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        self.body = nn.Sequential(
            _ConvBnPrelu(cin, hidden),
            _ConvBnPrelu(hidden, hidden, kernel=3, stride=stride, groups=hidden),
            _ConvBnPrelu(hidden, cout, act=False))
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x)
        return x + out if self.residual else out


class MobileFaceNetish(nn.Module):
    """A small MobileFaceNet: strided stem, depthwise stage, bottlenecks, GDC head, BN1d.

    A 32x32 input reaches 4x4 before the head; the GDC is a 4x4 depthwise
    convolution without padding that leaves one pixel per channel.
    """

    def __init__(self, *, input_size: int = 32, width: int = 16, dim: int = 32):
        super().__init__()
        self.stem = _ConvBnPrelu(3, width, kernel=3, stride=2)
        self.dw = _ConvBnPrelu(width, width, kernel=3, groups=width)
        self.blocks = nn.Sequential(
            _Bottleneck(width, width, stride=2, expand=2),
            _Bottleneck(width, width, stride=1, expand=2),
            _Bottleneck(width, 2 * width, stride=2, expand=2))
        self.conv_last = _ConvBnPrelu(2 * width, 4 * width)
        side = input_size // 8
        self.gdc = _ConvBnPrelu(4 * width, 4 * width, kernel=side, groups=4 * width, padding=0,
                                act=False)
        self.linear = nn.Linear(4 * width, dim, bias=False)
        self.features = nn.BatchNorm1d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_last(self.blocks(self.dw(self.stem(x))))
        x = torch.flatten(self.gdc(x), 1)
        return self.features(self.linear(x))


class Normalising(nn.Module):
    """A network that normalises its own 0-255 input: ``net((x - 127.5) * 0.0078125)``.

    Its graph starts with Sub and Mul nodes, as older insightface exports do.
    """

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - 127.5) * 0.0078125)


class PoolsAndPads(nn.Module):
    """The operators the other nets do not reach: Pad, MaxPool (ceil mode), AveragePool,
    Clip (ReLU6), LeakyReLU, Sigmoid gating, channel Concat, GlobalAveragePool, MatMul."""

    def __init__(self, *, dim: int = 8):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, bias=True)
        self.branch = nn.Conv2d(8, 8, 1)
        self.gate = nn.Conv2d(16, 16, 1)
        self.proj = nn.Parameter(torch.randn(16, dim) / 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.pad(x, (1, 1, 1, 1), mode="reflect")
        x = nn.functional.relu6(self.conv(x))
        x = nn.functional.max_pool2d(x, 3, stride=2, ceil_mode=True)
        y = nn.functional.leaky_relu(self.branch(x), 0.1)
        y = nn.functional.avg_pool2d(y, 3, stride=1, padding=1, count_include_pad=False)
        x = torch.cat([x, y], dim=1)
        x = x * torch.sigmoid(self.gate(x))
        x = nn.functional.adaptive_avg_pool2d(x, 1).flatten(1)
        return x @ self.proj


def randomize_bn_(model: nn.Module, *, seed: int) -> nn.Module:
    """Random BatchNorm statistics and PReLU slopes (trivial ones would hide a swap); eval mode."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
                for tensor, low, high in ((module.weight, 0.5, 1.5), (module.bias, -0.2, 0.2),
                                          (module.running_mean, -0.2, 0.2),
                                          (module.running_var, 0.5, 2.0)):
                    tensor.copy_(low + (high - low) * torch.rand(tensor.shape,
                                                                 generator=generator))
            elif isinstance(module, nn.PReLU):
                module.weight.copy_(0.5 * torch.rand(module.weight.shape, generator=generator))
    return model.eval()


def export(model: nn.Module, path: Path, *, input_size: int, opset: int = 13,
           dynamic_batch: bool = True, keep_batchnorm: bool = False, fp16: bool = False,
           external_data: bool = False) -> Path:
    """Write `model` as ONNX with the legacy (TorchScript) exporter.

    Args:
      model: a network taking [B, 3, S, S]; put in eval mode.
      path: the .onnx file to write.
      input_size: S.
      opset: the opset to export with.
      dynamic_batch: declare the batch axis dynamic (else fixed at 2).
      keep_batchnorm: keep BatchNormalization nodes (as insightface's packs
        have them) instead of letting the exporter fold them into the convs.
      fp16: store float initializers as float16, each followed by a Cast to
        float32 (how fp16-weight models run on an fp32 input).
      external_data: store the initializers in a file beside the .onnx.

    Returns:
      `path`.
    """
    import onnx

    kwargs = {}
    if keep_batchnorm:
        kwargs = {"training": torch.onnx.TrainingMode.PRESERVE, "do_constant_folding": False}
    # Inference mode, as the packs are exported (and an export in training mode
    # would write BatchNormalization's running-statistics outputs).
    model.eval()
    dummy = torch.zeros(2, 3, input_size, input_size)
    with warnings.catch_warnings():  # the legacy exporter's deprecation notices
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (dummy,), str(path), opset_version=opset, dynamo=False,
                          input_names=["input"], output_names=["embedding"],
                          dynamic_axes={"input": {0: "batch"}, "embedding": {0: "batch"}}
                          if dynamic_batch else None, **kwargs)
    proto = onnx.load(str(path))
    if fp16:
        _to_fp16_initializers(proto)
    if fp16 or external_data:
        if external_data:
            onnx.save_model(proto, str(path), save_as_external_data=True,
                            all_tensors_to_one_file=True, location=path.name + ".data",
                            size_threshold=0)
        else:
            onnx.save(proto, str(path))
    return path


def _to_fp16_initializers(proto) -> None:
    """Each float initializer stored as float16 and cast back to float32 where it is read."""
    import onnx
    from onnx import helper, numpy_helper

    casts = []
    for tensor in proto.graph.initializer:
        if tensor.data_type != onnx.TensorProto.FLOAT:
            continue
        half = numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float16),
                                       tensor.name + "_fp16")
        tensor.CopyFrom(half)
        casts.append(helper.make_node("Cast", [tensor.name], [tensor.name[:-5]],
                                      to=onnx.TensorProto.FLOAT, name=f"cast_{tensor.name}"))
    nodes = list(proto.graph.node)
    del proto.graph.node[:]
    proto.graph.node.extend(casts + nodes)


def onnxruntime_embed(path: Path, images: np.ndarray, *, mean: float = 127.5,
                      std: float = 127.5) -> np.ndarray:
    """ONNX Runtime's embeddings of NHWC RGB crops in [0, 1], fed ``(255 x - mean) / std``."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 2
    session = onnxruntime.InferenceSession(str(path), options,
                                           providers=["CPUExecutionProvider"])
    x = ((255.0 * images - mean) / std).transpose(0, 3, 1, 2).astype(np.float32)
    return session.run(None, {session.get_inputs()[0].name: np.ascontiguousarray(x)})[0]


def tiny_graph(path: Path, *, opset: int = 9, side: int = 16, dim: int = 8, seed: int = 0) -> Path:
    """A small face-embedding graph written with onnx.helper (no exporter): fast to compile.

    Conv 3x3 (+ bias) -> Relu -> Conv 3x3 stride 2 -> PRelu -> GlobalAveragePool
    -> Flatten -> Gemm (transB), on [N, 3, side, side]; opset 9 by default,
    the oldest the importer supports.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)

    def weight(name, *shape, scale=0.3):
        return numpy_helper.from_array((scale * rng.normal(size=shape)).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["input", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1],
                         kernel_shape=[3, 3]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1],
                         strides=[2, 2], kernel_shape=[3, 3]),
        helper.make_node("PRelu", ["c2", "slope"], ["p2"], name="prelu2"),
        helper.make_node("GlobalAveragePool", ["p2"], ["g"], name="pool"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc", "fc_b"], ["embedding"], name="fc", transB=1),
    ]
    initializers = [weight("w1", 8, 3, 3, 3), weight("b1", 8, scale=0.1),
                    weight("w2", 8, 8, 3, 3, scale=0.2), weight("slope", 8, 1, 1, scale=0.1),
                    weight("fc", dim, 8), weight("fc_b", dim, scale=0.1)]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                      ["batch", 3, side, side])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", dim])],
        initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 7  # what ONNX Runtime reads for these opsets
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path
