"""torch.compile and CUDA graphs of SWAPPED real (tiny) Hugging Face models: after
`torch_ops.swap_norms_`, the model
- compiles with fullgraph=True (any graph break raises) for inference and for a training
  step (forward + backward), each graph holding one of our ops per swapped norm, with
  the same logits / loss / parameter gradients as the eager swapped model;
- CUDA: its decode-style forward (a batch of 1-token inputs) captures into a CUDA graph
  (torch.cuda.graph) and replays on new inputs with eager's results;
- CUDA: works under torch.compile(mode="reduce-overhead") (inductor + CUDA graph trees),
  without inductor skipping the CUDA graphs.

Models: Qwen3-Next (norm, then gate; Qwen3-Next's tiny config from test_swap_models has
dense MLPs, so no MoE routing with data-dependent shapes) and Mamba2 (gate before the
norm, 2 groups). Their HF torch paths trace without graph breaks. Two failures of HF's own
code under AOTAutograd's eager backends, identical in the UNSWAPPED model (not ours,
checked on torch 2.14.1 / transformers 5.23.0), decide the backends used below:
- Mamba2, decode shape (batch > 1, 1 token): the chunked-scan einsum of HF's torch
  fallback fails in the aot_eager backends ("view size is not compatible ...");
  inductor compiles and runs it. So the quick check covers Mamba2's prefill shape, and
  the inductor test (slow on the CPU) its decode shape.
- Qwen3-Next, training: plain aot_eager fails the same way in the backward;
  aot_eager_decomp_partition (inductor's decompositions and partitioner) works.
The quick CI backend is therefore aot_eager_decomp_partition: dynamo + AOTAutograd (fake
kernels, autograd registration, functionalization, the partitioner), graphs run
eagerly, no code generation (~5 s per compile on a 2-core CPU). Inductor itself takes
20-90 s per model there: `slow` on the CPU, run normally on CUDA.

Not covered: a decode step with a real KV / SSM-state cache (HF's cache objects are
Python state outside the graph); the 1-token forward without cache is the decode-shaped
workload of our op (a few rows: one token per sequence, per head for Qwen3-Next).
"""
from __future__ import annotations

import importlib.util
import math

import pytest
import torch

transformers = pytest.importorskip("transformers")

from conftest import requires_cuda  # noqa: E402
from swap_helpers import _assert_normwise  # noqa: E402
from test_swap_models import MODEL_RTOL, MODELS, V, _build  # noqa: E402
from torch_ops import SwappedGatedNorm, swap_norms_  # noqa: E402

# Compiled vs eager, both fp32 and swapped: the compiler reorders / fuses fp32 arithmetic
# (inductor: the whole model; the aot backends: decompositions), each op still within a
# few ulp, carried through 2 layers with the O(1..10) gain assumed in test_swap_models.py
# -> the same norm-wise bound MODEL_RTOL (~1.2e-4) as there (observed: <= 1.2e-6).
COMPILE_RTOL = MODEL_RTOL
QUICK_BACKEND = "aot_eager_decomp_partition"
CPU_SLOW = [pytest.param("cpu", id="cpu", marks=pytest.mark.slow),
            pytest.param("cuda", id="cuda", marks=requires_cuda)]
PREFILL, DECODE = (2, 9), (4, 1)  # (batch, tokens)


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    """Every test compiles from scratch (no cache hits, no recompile limits across tests)."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def swapped_model(name, device):
    """The tiny model of test_swap_models.py (weights of the norms away from ones), swapped.
    Skipped when transformers would route it to an optimised package's kernels (fla,
    mamba_ssm, causal_conv1d: their own Triton/CUDA code, with its own compile story)."""
    packages = MODELS[name][3]
    for package in packages:
        if importlib.util.find_spec(package) is not None:
            pytest.skip(f"{package} is installed: transformers runs {name} on its kernels, not its torch path")
    model, norms, _ = _build(name, device)
    assert swap_norms_(model) == norms
    assert all(isinstance(model.get_submodule(n), SwappedGatedNorm) for n in norms)
    return model, norms


def ids_for(shape, device, seed):
    return torch.randint(0, V, shape, generator=torch.Generator().manual_seed(seed)).to(device)


class Recorder:
    """A dynamo backend that keeps the graphs it is given, then hands them to `inner`."""

    def __init__(self, inner=QUICK_BACKEND):
        self.inner = torch._dynamo.backends.registry.lookup_backend(inner)
        self.graphs = []

    def __call__(self, gm, example_inputs):
        self.graphs.append(gm)
        return self.inner(gm, example_inputs)

    def our_ops(self):
        """Names of the torch.ops.gatednorm calls in the recorded graphs."""
        return [str(n.target) for g in self.graphs for n in g.graph.nodes
                if n.op == "call_function" and str(n.target).startswith("gatednorm.")]


def logits_fn(model):
    return lambda ids: model(input_ids=ids, use_cache=False).logits


def loss_fn(model):
    return lambda ids: model(input_ids=ids, labels=ids, use_cache=False).loss


def grads_of(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def train_step(model, fn, ids):
    model.zero_grad(set_to_none=True)
    loss = fn(ids)
    loss.backward()
    return loss.detach().clone(), grads_of(model)


def assert_same_training(loss1, grads1, loss0, grads0, norms, what):
    """Loss and every parameter gradient norm-wise within COMPILE_RTOL; a gradient far
    smaller than the typical one is judged against the typical size (test_swap_models)."""
    _assert_normwise(loss1.reshape(1), loss0.reshape(1), COMPILE_RTOL, f"{what}: loss")
    assert set(grads1) == set(grads0), f"{what}: parameters with gradients differ"
    typical = math.sqrt(sum(g.double().square().sum().item() for g in grads0.values())
                        / sum(g.numel() for g in grads0.values()))
    for k, g0 in grads0.items():
        _assert_normwise(grads1[k], g0, COMPILE_RTOL, f"{what}: grad {k}", floor=typical * math.sqrt(g0.numel()))
    for n in norms:  # the swapped norms' weights are trained through our backward
        assert grads1[n + ".weight"].abs().sum() > 0, f"{what}: no gradient for {n}.weight"


# =================================================================== quick: fullgraph, no codegen

@pytest.mark.parametrize("name,shape", [("qwen3_next", PREFILL), ("qwen3_next", DECODE), ("mamba2", PREFILL)],
                         ids=["qwen3_next-prefill", "qwen3_next-decode", "mamba2-prefill"])
def test_fullgraph_inference(name, shape, device):
    model, norms = swapped_model(name, device)
    rec = Recorder()
    fn = torch.compile(logits_fn(model), backend=rec, fullgraph=True)
    with torch.no_grad():
        for seed in (1, 2):  # the second call reuses the compiled graph on new data
            ids = ids_for(shape, device, seed)
            expected = logits_fn(model)(ids)
            _assert_normwise(fn(ids), expected, COMPILE_RTOL, f"{name} {shape} logits, seed {seed}")
    assert len(rec.graphs) == 1, "fullgraph=True: one graph, no recompilation"
    # inference (no grad): the op without an autograd kernel or statistics, once per swapped norm
    assert rec.our_ops() == ["gatednorm.gated_norm_infer"] * len(norms)


@pytest.mark.parametrize("name", ["qwen3_next", "mamba2"])
def test_fullgraph_training_step(name, device):
    model, norms = swapped_model(name, device)
    model.train()  # these configs have no dropout: the eager and compiled runs compute the same function
    ids = ids_for(PREFILL, device, 1)
    loss0, grads0 = train_step(model, loss_fn(model), ids)
    rec = Recorder()
    fn = torch.compile(loss_fn(model), backend=rec, fullgraph=True)
    loss1, grads1 = train_step(model, fn, ids)
    assert_same_training(loss1, grads1, loss0, grads0, norms, f"{name} compiled training step")
    assert len(rec.graphs) == 1
    # the differentiable op, once per swapped norm; its backward is our gated_norm_bwd
    assert rec.our_ops() == ["gatednorm.gated_norm"] * len(norms)


def test_explain_reports_no_graph_break(device):
    """The same claim through torch._dynamo.explain (which counts breaks instead of raising)."""
    model, norms = swapped_model("qwen3_next", device)
    ids = ids_for(PREFILL, device, 1)
    explanation = torch._dynamo.explain(loss_fn(model))(ids)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


# =================================================================== inductor (CUDA: reduce-overhead)

@pytest.mark.parametrize("device", CPU_SLOW)
@pytest.mark.parametrize("name", ["qwen3_next", "mamba2"])
def test_inductor_training_and_decode(name, device):
    """Inductor, fullgraph: a training step and the decode-shaped forward, each called on
    several inputs. On CUDA with mode="reduce-overhead": the calls after the warm-up one
    record and then replay CUDA graphs (cudagraph trees), and inductor must not have
    skipped the CUDA graphs for any graph (it does so silently, counting
    counters["inductor"]["cudagraph_skips"], e.g. for a CPU tensor or an unsafe op)."""
    from torch._dynamo.utils import counters

    model, norms = swapped_model(name, device)
    cuda = device == "cuda"
    mode = "reduce-overhead" if cuda else None
    counters.clear()

    def step_begin():  # tells cudagraph trees that the previous iteration's outputs are dead
        if cuda:
            torch.compiler.cudagraph_mark_step_begin()

    model.train()
    train_c = torch.compile(loss_fn(model), fullgraph=True, mode=mode)
    for seed in (1, 2, 3):
        ids = ids_for(PREFILL, device, seed)
        loss0, grads0 = train_step(model, loss_fn(model), ids)
        step_begin()
        loss1, grads1 = train_step(model, train_c, ids)
        assert_same_training(loss1, grads1, loss0, grads0, norms, f"{name} inductor training, seed {seed}")

    model.eval()
    decode_c = torch.compile(logits_fn(model), fullgraph=True, mode=mode)
    previous = None
    with torch.no_grad():
        for seed in (1, 2, 3):
            ids = ids_for(DECODE, device, seed)
            step_begin()
            got = decode_c(ids).clone()  # cudagraph outputs are overwritten by the next replay
            _assert_normwise(got, logits_fn(model)(ids), COMPILE_RTOL, f"{name} inductor decode, seed {seed}")
            assert previous is None or not torch.equal(got, previous), "the compiled forward ignored its input"
            previous = got
    if cuda:
        assert counters["inductor"]["cudagraph_skips"] == 0, (
            "inductor skipped CUDA graphs (TORCH_LOGS=perf_hints says why)")


# =================================================================== CUDA graph capture (CUDA only)

@requires_cuda
@pytest.mark.parametrize("name", ["qwen3_next", "mamba2"])
def test_cuda_graph_decode_replay(name):
    """The eager swapped model's decode-shaped forward captured with torch.cuda.graph (the
    recipe of the PyTorch docs: warm up on a side stream, capture into static
    input/output tensors), replayed after copying new token ids into the static input:
    the same logits as eager on those ids, and different logits for different ids."""
    model, norms = swapped_model(name, "cuda")
    calls = []
    for n in norms:  # our modules run inside the capture (hooks fire at capture time only)
        model.get_submodule(n).register_forward_hook(lambda mod, args, out: calls.append(out.shape))
    static_ids = ids_for(DECODE, "cuda", 0)
    with torch.no_grad():
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                logits_fn(model)(static_ids)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        calls.clear()
        with torch.cuda.graph(graph):
            static_logits = logits_fn(model)(static_ids)
        assert len(calls) == len(norms), "the swapped norms did not run during the capture"
        previous = None
        for seed in (1, 2):
            new_ids = ids_for(DECODE, "cuda", seed)
            static_ids.copy_(new_ids)
            graph.replay()
            torch.cuda.synchronize()
            got = static_logits.clone()
            _assert_normwise(got, logits_fn(model)(new_ids), COMPILE_RTOL, f"{name} CUDA graph replay, seed {seed}")
            assert previous is None or not torch.equal(got, previous), "the replay ignored the new input"
            previous = got
