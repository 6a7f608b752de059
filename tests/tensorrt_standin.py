"""A stand-in for TensorRT's runtime (TensorRT needs an NVIDIA GPU, which no test machine has).

It implements the part of the name-based API that ``edge.inference.tensorrt.TensorRTSession``
uses, with TensorRT's rules as documented: output shapes are unknown (-1) until every input
shape is set, ``set_input_shape`` refuses a shape outside the optimisation profile,
``execute_async_v3`` reads its inputs from and writes its outputs to the bound device
addresses. The "engine" runs with onnxruntime on the CPU, and device memory is the host-memory
stand-in of ``cuda_standin``, so every read and write is checked against the allocation it
lands in. A serialized engine is JSON naming the ONNX file and the profile.
"""

from __future__ import annotations

import ctypes
import enum
import json
import types
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

VERSION = "10.3.0.30"


class Severity(enum.IntEnum):
    INTERNAL_ERROR = 0
    ERROR = 1
    WARNING = 2
    INFO = 3
    VERBOSE = 4


class ILogger:
    Severity = Severity

    def __init__(self) -> None:
        pass


class TensorIOMode(enum.Enum):
    NONE = 0
    INPUT = 1
    OUTPUT = 2


class DataType(enum.Enum):
    FLOAT = 0


class Dims(tuple):  # TensorRT's Dims behave like tuples of ints
    def __new__(cls, shape: Any = ()) -> Dims:
        return super().__new__(cls, (int(d) for d in shape))


def serialize(model: Path, profile: dict[str, Any]) -> bytes:
    """What the stand-in's "builder" makes: enough to rebuild the engine at deserialization."""
    return json.dumps({"model": str(model), "profile": {
        name: [list(r.min), list(r.opt), list(r.max)] for name, r in profile.items()}}).encode()


class Engine:
    def __init__(self, model: Path, profile: dict[str, list[list[int]]], memory: Any) -> None:
        self.session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        self.profile = {k: [tuple(s) for s in v] for k, v in profile.items()}
        self.memory = memory
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.declared = {i.name: tuple(d if isinstance(d, int) else -1 for d in i.shape)
                         for i in [*self.session.get_inputs(), *self.session.get_outputs()]}
        self.contexts = 0

    @property
    def num_io_tensors(self) -> int:
        return len(self.inputs) + len(self.outputs)

    def get_tensor_name(self, index: int) -> str:
        return [*self.inputs, *self.outputs][index]

    def get_tensor_mode(self, name: str) -> TensorIOMode:
        return TensorIOMode.INPUT if name in self.inputs else TensorIOMode.OUTPUT

    def get_tensor_dtype(self, name: str) -> DataType:
        return DataType.FLOAT

    def get_tensor_shape(self, name: str) -> Dims:
        return Dims(self.declared[name])

    def get_tensor_profile_shape(self, name: str, profile_index: int) -> list[Dims]:
        assert profile_index == 0
        return [Dims(s) for s in self.profile[name]]

    def create_execution_context(self) -> Context:
        self.contexts += 1
        return Context(self)


class Context:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.addresses: dict[str, int] = {}
        self.executions = 0
        self._outputs: dict[tuple[tuple[int, ...], ...], dict[str, tuple[int, ...]]] = {}

    def set_input_shape(self, name: str, shape: Any) -> bool:
        shape = tuple(shape)
        lo, _, hi = self.engine.profile[name]
        if len(shape) != len(lo) or not all(a <= s <= b for s, a, b in zip(shape, lo, hi,
                                                                           strict=True)):
            return False
        self.shapes[name] = shape
        return True

    def _output_shapes(self) -> dict[str, tuple[int, ...]]:
        key = tuple(self.shapes[n] for n in self.engine.inputs)
        if key not in self._outputs:
            feeds = {n: np.zeros(self.shapes[n], np.float32) for n in self.engine.inputs}
            outs = self.engine.session.run(self.engine.outputs, feeds)
            self._outputs[key] = {n: o.shape for n, o in zip(self.engine.outputs, outs,
                                                             strict=True)}
        return self._outputs[key]

    def get_tensor_shape(self, name: str) -> Dims:
        if name in self.engine.inputs:
            return Dims(self.shapes.get(name, self.engine.declared[name]))
        if any(n not in self.shapes for n in self.engine.inputs):
            return Dims(self.engine.declared[name])
        return Dims(self._output_shapes()[name])

    def set_tensor_address(self, name: str, memory: int) -> bool:
        self.addresses[name] = int(memory)
        return True

    def _block(self, ptr: int, nbytes: int) -> None:
        block = self.engine.memory.blocks.get(ptr)
        assert block is not None, "address is not a device allocation"
        assert nbytes <= len(block), f"{nbytes} bytes do not fit the {len(block)}-byte buffer"

    def execute_async_v3(self, stream_handle: int) -> bool:
        assert isinstance(stream_handle, int)
        if set(self.addresses) != {*self.engine.inputs, *self.engine.outputs}:
            return False
        feeds = {}
        for name in self.engine.inputs:
            shape = self.shapes[name]
            nbytes = int(np.prod(shape)) * 4
            self._block(self.addresses[name], nbytes)
            raw = ctypes.string_at(self.addresses[name], nbytes)
            feeds[name] = np.frombuffer(raw, np.float32).reshape(shape)
        outs = self.engine.session.run(self.engine.outputs, feeds)
        for name, out in zip(self.engine.outputs, outs, strict=True):
            out = np.ascontiguousarray(out, np.float32)
            self._block(self.addresses[name], out.nbytes)
            ctypes.memmove(self.addresses[name], out.ctypes.data, out.nbytes)
        self.executions += 1
        return True


class Runtime:
    memory: Any = None  # the cuda_standin module whose allocations are "device memory"

    def __init__(self, logger: ILogger) -> None:
        self.logger = logger

    def deserialize_cuda_engine(self, data: bytes) -> Engine | None:
        try:
            spec = json.loads(data)
        except ValueError:
            return None  # TensorRT logs an error and returns None for bytes it cannot read
        return Engine(Path(spec["model"]), spec["profile"], Runtime.memory)


def module(memory: Any) -> types.ModuleType:
    """A ``tensorrt`` module for ``sys.modules``; ``memory`` is a ``cuda_standin`` runtime."""
    trt = types.ModuleType("tensorrt")
    Runtime.memory = memory
    trt.__version__ = VERSION  # type: ignore[attr-defined]
    for name, value in {"ILogger": ILogger, "TensorIOMode": TensorIOMode, "DataType": DataType,
                        "Dims": Dims, "Runtime": Runtime,
                        "nptype": lambda dtype: np.float32,
                        "Builder": object}.items():  # builds run on a device only
        setattr(trt, name, value)
    return trt
