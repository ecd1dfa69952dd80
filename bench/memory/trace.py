"""Record the device allocations of one forward pass without running it: every tensor storage the
forward creates, which op and module created it, and when Python drops it, in order.

The model is built on the meta device, its parameters and the input become fake tensors on the
target device (a CUDA device works on a CPU-only build), and the forward runs under FakeTensorMode
with `_Recorder`, a TorchDispatchMode that sees every op: a new storage among an op's outputs is an
allocation, and a weakref finaliser on it marks the free when its last reference goes, as it would
in the real run (so lifetimes follow this interpreter's reference counting). Where a plain fake run
would allocate differently from the real one, the recorder steps in:
- composite ops (linear, layer_norm, matmul, ...) arrive whole under inference_mode: their C++
  composite runs through the recorder, so their temporaries show;
- ops whose kernel the target device picks differently follow `bench.memory.rules`; on the CPU, a
  pointwise op's floating inputs of another dtype are cast into temporaries first (TensorIterator);
- custom ops allocate what their declared memory model says (kernels._memory), per backend;
- ops issued inside the handler skip the view-tracking key, so a view of a tensor that requires
  grad (a weight's `.t()`) is marked as requiring grad, as in a real run (matmul reads it);
- `Tensor.__getitem__` and `.contiguous()` open a device guard, which fails for CUDA on a CPU-only
  build: they run as the select/slice/clone ops they amount to;
- autocast is switched on by setting its state (torch.autocast turns itself off without CUDA; the
  CUDA casting rules exist in every build). Its weight cache is unused under inference_mode
  (weights are cast in every forward); anything a forward leaves alive (such a cache outside
  inference_mode) is reported as `kept`.
"""
from __future__ import annotations

import functools
import operator
import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional

import torch
from torch import Tensor, nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from kernels import _memory

aten = torch.ops.aten
_ATEN_NAMESPACES = ("aten", "prim", "prims")
_COMPOSITE = torch._C.DispatchKey.CompositeImplicitAutograd
_GEMMS = frozenset({aten.mm, aten.addmm, aten.bmm, aten.baddbmm, aten.addbmm, aten._addmm_activation})


class TraceError(RuntimeError):
    """The forward could not be traced on fake tensors."""


class MissingMemoryModel(TraceError):
    """A custom op (or one of its backends) declares no memory model."""


@dataclass(frozen=True)
class Alloc:
    """One allocation: its bytes and where it came from."""

    nbytes: int
    op: str  # the op (or rule / memory-model buffer) that allocated it
    module: str  # qualified name of the innermost module running ("" = the model itself)
    shape: tuple[int, ...]
    dtype: torch.dtype
    what: str = ""  # "weight", "input", or the buffer a rule or a memory model names


@dataclass
class Trace:
    """A forward's allocations. `events` are (alloc id, allocated?) in order; `kept` the ids still
    alive when the forward returned (autocast's cached weight casts: only the first forward makes
    them); `first_gemm` the event position right after the first cuBLAS-type op's output."""

    model: str  # the model's label
    device: str
    weights: list[Alloc]  # parameters and buffers, in the order model.to(device) allocates them
    input: Alloc
    allocs: list[Alloc] = field(default_factory=list)
    events: list[tuple[int, bool]] = field(default_factory=list)
    kept: frozenset[int] = frozenset()
    first_gemm: Optional[int] = None
    backends: dict[str, str] = field(default_factory=dict)  # custom op -> backend its memory model assumed


# ---- building the fake model ----------------------------------------------------------------

def to_device_order(model: nn.Module) -> list[tuple[str, Tensor]]:
    """Parameters and buffers in the order `model.to(device)` copies them (Module._apply: children
    first, then the module's own parameters, then its buffers), each shared tensor once."""
    seen: set[int] = set()
    order: list[tuple[str, Tensor]] = []

    def visit(module: nn.Module, prefix: str) -> None:
        for name, child in module.named_children():
            visit(child, f"{prefix}{name}.")
        for name, t in (*module._parameters.items(), *module._buffers.items()):
            if t is not None and id(t) not in seen:
                seen.add(id(t))
                order.append((prefix + name, t))

    visit(model, "")
    return order


def fake_model(factory: Callable[[], nn.Module], device: str, fake_mode: FakeTensorMode) -> nn.Module:
    """The module `factory()` builds (on the meta device, so nothing is initialised), in eval mode,
    with every parameter and buffer replaced by an empty fake tensor on `device`."""
    with torch.device("meta"):
        model = factory()
    if not isinstance(model, nn.Module):
        raise TypeError(f"the model factory returned {type(model).__name__}, not an nn.Module")
    model.eval()
    fakes: dict[int, Tensor] = {}

    def fake(t: Tensor) -> Tensor:
        if id(t) not in fakes:
            with fake_mode:
                new = torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device=device)
            fakes[id(t)] = nn.Parameter(new, requires_grad=t.requires_grad) if isinstance(t, nn.Parameter) else new
        return fakes[id(t)]

    for module in model.modules():
        for table in (module._parameters, module._buffers):
            for name, t in table.items():
                if t is not None:
                    table[name] = fake(t)
    return model


# ---- what the forward runs instead of a device-guarded Python method ---------------------------

def _getitem(t: Tensor, index: Any) -> Tensor:
    """Indexing as the aten ops it amounts to: basic indexing (ints, slices, None, Ellipsis) as
    select/slice/unsqueeze views; tensor indices mixed only with full slices as aten.index."""
    index = index if isinstance(index, tuple) else (index,)
    if any(isinstance(i, (Tensor, list)) for i in index):
        return _advanced(t, index)
    if any(isinstance(i, bool) for i in index):
        raise TraceError("indexing with a bool is not supported by the memory tracer")
    explicit = sum(1 for i in index if i is not None and i is not Ellipsis)
    out, dim = t, 0
    for i in index:
        if i is None:
            out, dim = aten.unsqueeze(out, dim), dim + 1
        elif i is Ellipsis:
            dim += t.dim() - explicit
        elif isinstance(i, slice):
            if i != slice(None):
                out = aten.slice.Tensor(out, dim, i.start, i.stop, 1 if i.step is None else i.step)
            dim += 1
        else:
            out = aten.select.int(out, dim, operator.index(i))
    return out


def _advanced(t: Tensor, index: tuple) -> Tensor:
    """x[:, idx], x[mask], ...: tensor (or list) indices with full slices around them."""
    if any(i is not Ellipsis and not isinstance(i, (Tensor, list)) and i != slice(None) for i in index) \
            or sum(i is Ellipsis for i in index) > 1:
        raise TraceError("indexing that mixes tensor indices with ints, partial slices or None is not "
                         "supported by the memory tracer")
    if Ellipsis in index:
        at = index.index(Ellipsis)
        index = index[:at] + (slice(None),) * (t.dim() - len(index) + 1) + index[at + 1:]
    indices = [None if isinstance(i, slice) else torch.as_tensor(i, device=t.device) for i in index]
    return aten.index.Tensor(t, indices)


class _PlainIndexing(TorchFunctionMode):
    """Tensor.__getitem__ and .contiguous() run as the aten ops they amount to."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is Tensor.__getitem__:
            return _getitem(*args)
        if func is Tensor.contiguous:
            t, layout = args[0], kwargs.get("memory_format", args[1] if len(args) > 1 else torch.contiguous_format)
            return t if t.is_contiguous(memory_format=layout) else aten.clone(t, memory_format=layout)
        return func(*args, **kwargs)


@contextmanager
def autocast_state(device_type: str, dtype: torch.dtype) -> Iterator[None]:
    """torch.autocast(device_type, dtype) for float16/bfloat16 (nothing for float32), entered by
    setting its state directly, which works where torch.autocast would disable itself (no CUDA)."""
    if dtype == torch.float32:
        yield
        return
    prev = (torch.is_autocast_enabled(device_type), torch.get_autocast_dtype(device_type),
            torch.is_autocast_cache_enabled())
    torch.set_autocast_enabled(device_type, True)
    torch.set_autocast_dtype(device_type, dtype)
    torch.autocast_increment_nesting()
    torch.set_autocast_cache_enabled(True)
    try:
        yield
    finally:
        if torch.autocast_decrement_nesting() == 0:
            torch.clear_autocast_cache()
        torch.set_autocast_enabled(device_type, prev[0])
        torch.set_autocast_dtype(device_type, prev[1])
        torch.set_autocast_cache_enabled(prev[2])


# ---- the recorder -------------------------------------------------------------------------------

def _storage_key(t: Tensor) -> int:
    return t.untyped_storage()._cdata


class _Recorder(TorchDispatchMode):
    """Records allocations (new output storages) and frees (their finalisers) of every op."""

    def __init__(self, device_type: str, rules: dict, backends: dict[str, str], known: list[Tensor], autocast: bool):
        super().__init__()
        self.device_type, self.rules, self.overrides, self.autocast = device_type, rules, backends, autocast
        self.known = {_storage_key(t) for t in known}  # weights and input: allocated before the forward
        self.live: dict[int, int] = {}  # storage key -> alloc id
        self.allocs: list[Alloc] = []
        self.events: list[tuple[int, bool]] = []
        self.scope: list[str] = [""]
        self.first_gemm: Optional[int] = None
        self.depth = 0  # > 0 while ops issued from inside the handler run
        self.backends: dict[str, str] = {}
        self._composite: dict[Any, bool] = {}

    # -- allocation bookkeeping
    def record(self, out: Any, op: str, what: str = "") -> None:
        for t in tree_leaves(out):
            if not isinstance(t, Tensor) or t.device.type != self.device_type:
                continue
            storage = t.untyped_storage()
            key = storage._cdata
            if key in self.known or key in self.live or storage.nbytes() == 0:
                continue
            self.live[key] = len(self.allocs)
            self.events.append((len(self.allocs), True))
            self.allocs.append(Alloc(storage.nbytes(), op, self.scope[-1], tuple(t.shape), t.dtype, what))
            weakref.finalize(storage, self._free, key)

    def _free(self, key: int) -> None:
        self.events.append((self.live.pop(key), False))

    def empty(self, shape: tuple[int, ...], dtype: torch.dtype, op: str, what: str, device: torch.device,
              layout: torch.memory_format = torch.contiguous_format) -> Tensor:
        """A new (recorded) tensor standing for a kernel's own allocation."""
        t = torch.empty(shape, dtype=dtype, device=device, memory_format=layout)
        self.record(t, op, what)
        return t

    @contextmanager
    def inner(self) -> Iterator[None]:
        """Run ops from inside the handler (a decomposition, a rule, an op body) through the recorder."""
        self.depth += 1
        try:
            with self:
                yield
        finally:
            self.depth -= 1

    # -- dispatch
    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func.namespace not in _ATEN_NAMESPACES:
            return self._custom_op(func, args, kwargs)
        rule = self.rules.get(func) or self.rules.get(func.overloadpacket)
        if rule is not None:
            return rule(self, func, *args, **kwargs)
        if self._is_composite(func):  # the C++ composite, as eager runs it (not a Python decomposition)
            with self.inner():
                return func._op_dk(_COMPOSITE, *args, **kwargs)
        casts = self._cpu_input_casts(func, args) if self.device_type == "cpu" else None
        out = func(*args, **kwargs)
        if self.depth and func.is_view and isinstance(out, Tensor) and getattr(args[0], "requires_grad", False):
            # A real view of a tensor that requires grad does too, also under inference_mode (and
            # composites read it: matmul folds with a copy then). Ops issued inside this handler
            # (decompositions, rules, op bodies) skip the view-tracking key, so set it here.
            out.requires_grad_(True)
        self.record(out, str(func.overloadpacket))
        del casts  # the kernel's temporaries go once its output exists
        if self.first_gemm is None and func.overloadpacket in _GEMMS:
            self.first_gemm = len(self.events)
        return out

    def _cpu_input_casts(self, func, args) -> Optional[list[Tensor]]:
        """The CPU build's TensorIterator casts floating inputs of a pointwise op that differ from
        their common dtype into temporaries (CUDA kernels cast as they read): allocate them."""
        if torch.Tag.pointwise not in func.tags:
            return None
        inputs = [t for t in tree_leaves(args) if isinstance(t, Tensor) and t.dim() > 0 and t.is_floating_point()]
        if len({t.dtype for t in inputs}) < 2:
            return None
        common = functools.reduce(torch.promote_types, (t.dtype for t in inputs))
        return [self.empty(tuple(t.shape), common, str(func.overloadpacket), "input cast (CPU)", t.device)
                for t in inputs if t.dtype != common]

    def _is_composite(self, func) -> bool:
        if func not in self._composite:
            self._composite[func] = func.namespace == "aten" and torch._C._dispatch_has_kernel_for_dispatch_key(
                func.name(), _COMPOSITE)
        return self._composite[func]

    def _custom_op(self, func, args, kwargs):
        name = func._schema.name
        try:
            model = _memory.memory_model(name)
        except LookupError as exc:
            raise MissingMemoryModel(str(exc)) from None
        names = [a.name for a in func._schema.arguments]
        bound = {**{a.name: a.default_value for a in func._schema.arguments if a.has_default_value()},
                 **dict(zip(names, args)), **kwargs}
        backend = self._backend(model, bound)
        declared = model.backends.get(backend)
        if declared is None:
            raise MissingMemoryModel(f"custom op {name} declares no memory model for backend {backend!r} "
                                     f"(declared: {', '.join(model.backends)})")
        self.backends[name] = backend
        if model.backend_arg is not None:
            bound[model.backend_arg] = backend
        call = [bound[n] for n in names]
        if declared == _memory.TRACE:  # plain PyTorch ops: run the op's own body and record them
            with self.inner(), self._body_autocast(name):
                return func._op_dk(torch._C.DispatchKey.CompositeExplicitAutograd, *call)
        memory = declared(**bound)
        device = next(t.device for t in tree_leaves(call) if isinstance(t, Tensor))
        before = self._buffers(memory.before, name, device)
        out = func(*call)
        self.record(out, name)
        after = self._buffers(memory.after, name, device)
        del before, after  # the kernel's own buffers go when the op returns
        return out

    @contextmanager
    def _body_autocast(self, op: str) -> Iterator[None]:
        """Autocast as a real run has it in a custom op's body. A dispatch-mode handler runs with
        autocast off; a real op without an autocast kernel of its own falls through autocast, so
        its body runs with autocast on (an op with one decides for itself: the state is kept)."""
        key = "AutocastCUDA" if self.device_type == "cuda" else "AutocastCPU"
        if not self.autocast or torch._C._dispatch_has_kernel_for_dispatch_key(op, key):
            yield
            return
        torch.set_autocast_enabled(self.device_type, True)
        try:
            yield
        finally:
            torch.set_autocast_enabled(self.device_type, False)

    def _buffers(self, buffers, op: str, device: torch.device) -> list[Tensor]:
        """Allocate a memory model's buffers in order; a transient one is dropped once the next exists."""
        held: list[Tensor] = []
        alive = None  # the last transient buffer, kept alive until the next buffer exists
        for buf in buffers:
            t = self.empty(buf.shape, buf.dtype, op, buf.what, device)
            alive = t if buf.transient else None  # noqa: F841 (the reference is the point)
            if not buf.transient:
                held.append(t)
        return held

    def _backend(self, model: _memory.MemoryModel, bound: dict) -> str:
        """The backend whose memory model applies: an override, else the one the op was called with,
        except on a machine without CUDA tracing for CUDA, where an op whose GPU backend depends on
        what the GPU machine has installed is assumed to run the one it declares."""
        if model.backend_arg is None:
            return model.only
        short = model.op.split("::")[-1]
        if short in self.overrides:
            return self.overrides[short]
        if self.device_type == "cuda" and model.gpu_backend and not torch.cuda.is_available():
            return model.gpu_backend
        return bound[model.backend_arg]

    # -- module scope, for the composition report
    def watch(self, model: nn.Module) -> list:
        """Hooks that keep `scope` = the names of the modules running (hooks return None: the
        forward's arguments and outputs are left as they are)."""
        def enter(name: str) -> None:
            self.scope.append(name)

        def leave() -> None:
            self.scope.pop()

        handles = []
        for name, module in model.named_modules():
            handles.append(module.register_forward_pre_hook(lambda m, a, name=name: enter(name)))
            handles.append(module.register_forward_hook(lambda m, a, o: leave()))
        return handles


def trace_forward(factory: Callable[[], nn.Module], img_size: int, batch: int, dtype: torch.dtype,
                  device_type: str, rules: dict, backends: Optional[dict[str, str]] = None,
                  label: str = "model") -> Trace:
    """Trace one forward of the model `factory()` builds on a [batch, 3, img_size, img_size] float32
    input on `device_type`, under inference_mode and (for half types) autocast to `dtype`.
    Raises MissingMemoryModel or TraceError (one line, naming `label`) when it cannot."""
    fake_mode = FakeTensorMode()
    try:
        model = fake_model(factory, device_type, fake_mode)
    except Exception as exc:
        raise TraceError(f"{label}: could not build the model on the meta device: {_first_line(exc)}") from exc
    with fake_mode:
        x = torch.empty(batch, 3, img_size, img_size, device=device_type)
    order = to_device_order(model)
    weights = [Alloc(t.numel() * t.element_size(), "to", name.rpartition(".")[0], tuple(t.shape), t.dtype, "weight")
               for name, t in order]
    batch_input = Alloc(x.numel() * x.element_size(), "randn", "", tuple(x.shape), x.dtype, "input")
    trace = Trace(label, device_type, weights, batch_input)
    recorder = _Recorder(device_type, rules, dict(backends or {}), [t for _, t in order] + [x], dtype != torch.float32)
    handles = recorder.watch(model)
    try:
        with torch.inference_mode(), autocast_state(device_type, dtype), fake_mode, _PlainIndexing(), recorder:
            model(x)  # the output is dropped at once, as in the timed forward
            end, kept = len(recorder.events), frozenset(recorder.live.values())
    except TraceError as exc:
        raise type(exc)(f"{label}: {exc}") from None
    except Exception as exc:
        raise TraceError(f"{label}: the forward could not be traced on fake {device_type} tensors: "
                         f"{_first_line(exc)}") from exc
    finally:
        for h in handles:
            h.remove()
    trace.allocs, trace.events, trace.kept = recorder.allocs, recorder.events[:end], kept
    trace.first_gemm, trace.backends = recorder.first_gemm, recorder.backends
    return trace


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]
