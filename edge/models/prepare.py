"""Turn the int8 block-quantised source graphs into plain fp32 graphs every runtime accepts.

Why: onnxruntime and TensorRT reject the sources as they are (``DequantizeLinear`` with
``block_size``, initializers listed as graph inputs). The dequantisation only ever touches
constant weights, so evaluating it once here loses nothing: the folded weights are exactly the
values OpenCV computes at load time. While rewriting, YuNet's input height and width become
symbolic (its reshapes use -1, so any multiple of 32 runs: 640x384 for a 16:9 frame with no
letterbox) and SFace gets a dynamic batch dimension (every face of a frame in one run).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edge.errors import ModelError
from edge.models.fetch import cached_ok, source_path, write_atomic
from edge.models.manifest import Manifest, prepared_path, sha256_file
from edge.progress import Progress, report

log = logging.getLogger(__name__)

FOLDABLE = {"DequantizeLinear", "Reshape", "Constant"}
PRODUCER = "edge-face models prepare"


def _dequantize_blocked(q: np.ndarray, scale: np.ndarray, zero: np.ndarray | None, axis: int,
                        block: int) -> np.ndarray:
    """ONNX 21 DequantizeLinear, per-tensor, per-axis or blocked, in float32."""
    x = q.astype(np.float32)
    scale = scale.astype(np.float32)
    zp = np.zeros_like(scale) if zero is None else zero.astype(np.float32)
    if scale.size == 1:
        return (x - zp.reshape(())) * scale.reshape(())
    axis = axis % x.ndim
    if block > 0:
        scale = np.repeat(scale, block, axis=axis)
        zp = np.repeat(zp, block, axis=axis)
        index = [slice(None)] * x.ndim
        index[axis] = slice(0, x.shape[axis])
        scale, zp = scale[tuple(index)], zp[tuple(index)]
    else:
        shape = [1] * x.ndim
        shape[axis] = x.shape[axis]
        scale, zp = scale.reshape(shape), zp.reshape(shape)
    return ((x - zp) * scale).astype(np.float32)


def _attr(node: onnx.NodeProto, name: str, default: int) -> int:
    for a in node.attribute:
        if a.name == name:
            return int(helper.get_attribute_value(a))
    return default


def fold_constants(model: onnx.ModelProto) -> onnx.ModelProto:
    """Evaluate DequantizeLinear/Reshape/Constant nodes whose inputs are all constant."""
    graph = model.graph
    consts: dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    kept: list[onnx.NodeProto] = []
    folded = 0
    for node in graph.node:
        inputs = [i for i in node.input if i]
        if node.op_type in FOLDABLE and all(i in consts for i in inputs):
            if node.op_type == "DequantizeLinear":
                zero = consts[node.input[2]] if len(node.input) > 2 and node.input[2] else None
                value = _dequantize_blocked(consts[node.input[0]], consts[node.input[1]], zero,
                                            _attr(node, "axis", 1), _attr(node, "block_size", 0))
            elif node.op_type == "Reshape":
                data, shape = consts[node.input[0]], consts[node.input[1]].astype(np.int64)
                shape = [data.shape[i] if s == 0 else int(s) for i, s in enumerate(shape)]
                value = data.reshape(shape)
            else:
                value = numpy_helper.to_array(node.attribute[0].t)
            consts[node.output[0]] = value
            folded += 1
        elif node.op_type == "Dropout":
            # Inference-time identity; its non-scalar ratio input also trips shape inference.
            kept.append(helper.make_node("Identity", [node.input[0]], [node.output[0]],
                                         name=node.name))
        else:
            kept.append(node)
    used = {i for n in kept for i in n.input} | {o.name for o in graph.output}
    initializers = [numpy_helper.from_array(np.ascontiguousarray(consts[name]), name)
                    for name in sorted(used) if name in consts]
    init_names = {t.name for t in initializers}
    # Inputs that are initializers, or that nothing reads (SFace lists its float weights as graph
    # inputs although only the dequantised copies are used), would be required feeds at run time.
    inputs = [i for i in graph.input
              if i.name not in init_names and i.name not in consts and i.name in used]
    new_graph = helper.make_graph(kept, graph.name, inputs, list(graph.output), initializers)
    opset = [helper.make_opsetid(o.domain, o.version) for o in model.opset_import]
    out = helper.make_model(new_graph, opset_imports=opset, producer_name=PRODUCER)
    out.ir_version = max(model.ir_version, 7)
    log.debug("folded constants", extra={"nodes": folded})
    return out


def _set_dims(value_info: onnx.ValueInfoProto, dims: dict[int, str]) -> None:
    shape = value_info.type.tensor_type.shape
    for index, name in dims.items():
        dim = shape.dim[index]
        dim.Clear()
        dim.dim_param = name


def make_dynamic(model: onnx.ModelProto, role: str) -> onnx.ModelProto:
    graph = model.graph
    if role == "detector":
        _set_dims(graph.input[0], {2: "height", 3: "width"})
        for out in graph.output:
            _set_dims(out, {1: f"anchors_{out.name.split('_')[-1]}"})
    else:
        _set_dims(graph.input[0], {0: "batch"})
        for out in graph.output:
            _set_dims(out, {0: "batch"})
    return model


def rewrite_prelu(model: onnx.ModelProto) -> onnx.ModelProto:
    """PRelu(x) = s*x + (1-s)*Relu(x), with constant slopes: the same function, 1.8x faster.

    onnxruntime has no blocked-layout (NCHWc) PRelu, so every convolution before one is wrapped
    in layout reorders and the PRelu kernel itself runs on one thread: half of SFace's time on
    x86. Relu, Mul and Add all have blocked kernels (the Muls become 1x1 convolutions), and the
    result differs from PRelu by float rounding only (measured max L2-relative 8.5e-7).
    """
    graph = model.graph
    consts = {i.name: i for i in graph.initializer}
    nodes: list[onnx.NodeProto] = []
    extra: list[onnx.TensorProto] = []
    for node in graph.node:
        if node.op_type != "PRelu" or node.input[1] not in consts:
            nodes.append(node)
            continue
        x, out, base = node.input[0], node.output[0], node.name or node.output[0]
        slope = numpy_helper.to_array(consts[node.input[1]]).astype(np.float32)
        keep = f"{base}_one_minus_slope"
        extra.append(numpy_helper.from_array(np.ascontiguousarray(1.0 - slope), keep))
        nodes += [
            helper.make_node("Relu", [x], [f"{base}_relu"], name=f"{base}_relu"),
            helper.make_node("Mul", [f"{base}_relu", keep], [f"{base}_pos"], name=f"{base}_pos"),
            helper.make_node("Mul", [x, node.input[1]], [f"{base}_lin"], name=f"{base}_lin"),
            helper.make_node("Add", [f"{base}_lin", f"{base}_pos"], [out], name=f"{base}_add"),
        ]
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(extra)
    return model


def prepare_graph(source: Path, role: str) -> onnx.ModelProto:
    try:
        model = onnx.load(str(source))
    except Exception as exc:  # onnx raises DecodeError and friends
        raise ModelError(f"{source}: not a loadable ONNX file: {exc}") from None
    model = make_dynamic(fold_constants(model), role)
    if role == "embedder":
        model = rewrite_prelu(model)
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ModelError(f"prepared {role} graph fails onnx.checker: {exc}") from None
    return model


def prepare_models(manifest: Manifest, models_dir: Path, force: bool = False,
                   verify: bool = True, progress: Progress | None = None) -> dict[str, Path]:
    """Prepare every model whose prepared file is missing or does not match the manifest.

    ``progress(done, total)`` counts steps: folding each model, then (with ``verify``) its
    cross-check against OpenCV; a model that is already prepared counts as done at once.
    """
    out: dict[str, Path] = {}
    per_model = 2 if verify else 1
    total = per_model * len(manifest.models)
    done = 0
    report(progress, done, total)
    for role, spec in manifest.models.items():
        dest = prepared_path(models_dir, spec)
        if (not force and dest.is_file() and spec.prepared_sha256
                and sha256_file(dest) == spec.prepared_sha256):
            out[role] = dest
            done += per_model
            report(progress, done, total)
            continue
        if not cached_ok(models_dir, spec):
            raise ModelError(
                f"source model {spec.source_file} is not in {models_dir / 'source'} (or fails its "
                "sha256); run `edge-face models fetch` first"
            )
        model = prepare_graph(source_path(models_dir, spec), role)
        write_atomic(dest, model.SerializeToString(deterministic=True))
        done += 1
        report(progress, done, total)
        digest = sha256_file(dest)
        if spec.prepared_sha256 and digest != spec.prepared_sha256:
            dest.unlink(missing_ok=True)
            raise ModelError(
                f"prepared {spec.prepared_file} has sha256 {digest}, the manifest pins "
                f"{spec.prepared_sha256}; the preparation is not reproducible with this onnx "
                f"version ({onnx.__version__})"
            )
        if verify:
            from edge.models.verify import verify_against_opencv

            verify_against_opencv(spec, source_path(models_dir, spec), dest)
            done += 1
            report(progress, done, total)
        log.info("model prepared", extra={"model": spec.id, "sha256": digest})
        out[role] = dest
    return out
