"""A stand-in for TensorRT's runtime (TensorRT needs an NVIDIA GPU, which no test machine has).

It implements the part of the name-based API that ``edge.inference.tensorrt.TensorRTSession``
uses, with TensorRT's rules as documented: output shapes are unknown (-1) until every input
shape is set, ``set_input_shape`` refuses a shape outside the optimisation profile,
``execute_async_v3`` reads its inputs from and writes its outputs to the bound device
addresses. The "engine" runs with onnxruntime on the CPU, and device memory is the host-memory
stand-in of ``cuda_standin``, so every read and write is checked against the allocation it
lands in. A serialized engine is JSON naming the ONNX file and the profile.

The builder side (``Builder``, ``OnnxParser``, the builder config, optimisation profiles and
timing caches) records what ``edge.inference.tensorrt.build_engine`` asks for and applies the
rules a real build would enforce: TensorRT 8.x parses ONNX only into an explicit-batch network,
a dynamic input needs a profile, FP16 is a flag on the config, the workspace is a memory-pool
limit, and a timing cache is bytes TensorRT may refuse. It builds nothing: its "plan" is the
same JSON the runtime above loads. Whether a real build gives a good engine is for the
contract suite on a device (``pytest -m jetson``).
"""

from __future__ import annotations

import ctypes
import enum
import hashlib
import json
import types
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import onnx
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


#: ONNX bytes the stand-in parser has seen, by sha256: a built "plan" names its model by that.
PARSED: dict[str, bytes] = {}


class Engine:
    def __init__(self, model: Path | bytes, profile: dict[str, list[list[int]]],
                 memory: Any) -> None:
        source = model if isinstance(model, bytes) else str(model)
        self.session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
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
        model = PARSED[spec["onnx_sha256"]] if "onnx_sha256" in spec else Path(spec["model"])
        return Engine(model, spec["profile"], Runtime.memory)


# -- the builder side ------------------------------------------------------------------------------

class NetworkDefinitionCreationFlag(enum.IntEnum):
    EXPLICIT_BATCH = 0


class MemoryPoolType(enum.Enum):
    WORKSPACE = 0


class BuilderFlag(enum.Enum):
    FP16 = 0


class Tensor:
    def __init__(self, name: str, shape: tuple[int, ...]) -> None:
        self.name, self.shape = name, Dims(shape)


class Network:
    def __init__(self, flags: int) -> None:
        self.flags = flags
        self.onnx = b""
        self.inputs: list[Tensor] = []

    @property
    def num_inputs(self) -> int:
        return len(self.inputs)

    def get_input(self, index: int) -> Tensor:
        return self.inputs[index]


class OnnxParser:
    def __init__(self, network: Network, logger: ILogger) -> None:
        self.network = network
        self.errors: list[str] = []

    @property
    def num_errors(self) -> int:
        return len(self.errors)

    def get_error(self, index: int) -> str:
        return self.errors[index]

    def parse(self, model: bytes) -> bool:
        explicit = self.network.flags & (1 << int(NetworkDefinitionCreationFlag.EXPLICIT_BATCH))
        if Builder.version.startswith("8.") and not explicit:
            self.errors.append("ONNX parser only supports networks with an explicit batch "
                               "dimension")
            return False
        try:
            graph = onnx.load_from_string(model).graph
        except Exception as exc:  # the real parser reports its protobuf errors the same way
            self.errors.append(f"failed to parse ONNX model: {exc}")
            return False
        PARSED[hashlib.sha256(model).hexdigest()] = model
        self.network.onnx = model
        initializers = {i.name for i in graph.initializer}
        self.network.inputs = [
            Tensor(i.name, tuple(d.dim_value if d.HasField("dim_value") else -1
                                 for d in i.type.tensor_type.shape.dim))
            for i in graph.input if i.name not in initializers]
        return True


class OptimizationProfile:
    def __init__(self) -> None:
        self.shapes: dict[str, tuple[tuple[int, ...], ...]] = {}

    def set_shape(self, name: str, lo: Dims, mid: Dims, hi: Dims) -> None:
        self.shapes[name] = (tuple(lo), tuple(mid), tuple(hi))


TIMING_MAGIC = b"standin-timing-cache:"


class TimingCache:
    """Entries are the builds it has timed; a real cache holds tactic timings."""

    def __init__(self, entries: list[str]) -> None:
        self.entries = entries

    def serialize(self) -> bytes:
        return TIMING_MAGIC + json.dumps({"tensorrt": Builder.version,
                                          "entries": self.entries}).encode()


class BuilderConfig:
    def __init__(self) -> None:
        self.flags: set[BuilderFlag] = set()
        self.pools: dict[MemoryPoolType, int] = {}
        self.profiles: list[OptimizationProfile] = []
        self.timing: TimingCache | None = None

    def set_memory_pool_limit(self, pool: MemoryPoolType, size: int) -> None:
        self.pools[pool] = size

    def set_flag(self, flag: BuilderFlag) -> None:
        self.flags.add(flag)

    def add_optimization_profile(self, profile: OptimizationProfile) -> int:
        self.profiles.append(profile)
        return len(self.profiles) - 1

    def create_timing_cache(self, data: bytes) -> TimingCache | None:
        if not data:
            return TimingCache([])
        if not data.startswith(TIMING_MAGIC):
            return None  # TensorRT logs an error and returns no cache for bytes it cannot read
        try:
            spec = json.loads(data[len(TIMING_MAGIC):])
        except ValueError:
            return None
        cache = TimingCache(list(spec["entries"]))
        cache.tensorrt = spec["tensorrt"]  # type: ignore[attr-defined]
        return cache

    def set_timing_cache(self, cache: TimingCache, ignore_mismatch: bool) -> bool:
        if not isinstance(cache, TimingCache):  # pybind11 checks argument types
            raise TypeError("set_timing_cache(): incompatible function arguments")
        if getattr(cache, "tensorrt", Builder.version) != Builder.version and not ignore_mismatch:
            return False  # a cache from another TensorRT (or GPU) is refused
        self.timing = cache
        return True

    def get_timing_cache(self) -> TimingCache:
        assert self.timing is not None
        return self.timing


class Builder:
    version = VERSION
    platform_has_fast_fp16 = True
    #: Every config a build ran with, for the tests to inspect.
    builds: ClassVar[list[tuple[Network, BuilderConfig]]] = []

    def __init__(self, logger: ILogger) -> None:
        self.logger = logger

    def create_network(self, flags: int) -> Network:
        return Network(flags)

    def create_builder_config(self) -> BuilderConfig:
        return BuilderConfig()

    def create_optimization_profile(self) -> OptimizationProfile:
        return OptimizationProfile()

    def build_serialized_network(self, network: Network,
                                 config: BuilderConfig) -> bytes | None:
        Builder.builds.append((network, config))
        shapes = config.profiles[0].shapes if config.profiles else {}
        for tensor in network.inputs:
            if any(d < 0 for d in tensor.shape) and tensor.name not in shapes:
                self.logger.log(Severity.ERROR, f"Network has dynamic or shape inputs, but no "
                                                f"optimization profile has been defined "
                                                f"({tensor.name}).")
                return None
        if config.timing is None:
            config.timing = TimingCache([])
        digest = hashlib.sha256(network.onnx).hexdigest()
        config.timing.entries.append(digest[:12])
        return json.dumps({"onnx_sha256": digest, "profile": {
            name: [list(s) for s in ranges] for name, ranges in shapes.items()}}).encode()


def module(memory: Any, version: str = VERSION) -> types.ModuleType:
    """A ``tensorrt`` module for ``sys.modules``; ``memory`` is a ``cuda_standin`` runtime."""
    trt = types.ModuleType("tensorrt")
    Runtime.memory = memory
    Builder.version = version
    Builder.platform_has_fast_fp16 = True
    Builder.builds = []
    trt.__version__ = version  # type: ignore[attr-defined]
    for name, value in {"ILogger": ILogger, "TensorIOMode": TensorIOMode, "DataType": DataType,
                        "Dims": Dims, "Runtime": Runtime,
                        "nptype": lambda dtype: np.float32,
                        "Builder": Builder, "OnnxParser": OnnxParser,
                        "NetworkDefinitionCreationFlag": NetworkDefinitionCreationFlag,
                        "MemoryPoolType": MemoryPoolType, "BuilderFlag": BuilderFlag}.items():
        setattr(trt, name, value)
    return trt
