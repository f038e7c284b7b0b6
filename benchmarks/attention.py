"""Attention with dropout on the CPU: the paths torch offers against `layers.chunked_dropout_attention`.

Two measurements, each a ratio within one run, one thread, process CPU time (median of 3):
  * the attention core alone, forward + backward, at MulT's largest map (MMSA's MOSI shapes:
    batch 16, 10 heads, vision 500 frames reading audio 375, head width 5), half the keys
    padded in some samples: the composite explicit path (the `need_weights` path of
    `layers.attention`, as the dropout path was before), SDPA with dropout (torch falls back to its
    math composite), `torch.utils.checkpoint` around the explicit path (RNG state preserved, so the
    recomputed mask matches), and the chunked function;
  * one optimiser step of `mult` at MMSA's MOSI width (benchmarks.peers) on a 16-sample batch of
    the MOSI-shaped file, attention dropout 0.1, with the composite path and with the chunked one.
Memory is what autograd keeps for backward (a saved-tensors hook: exact, unlike RSS).

    python -m benchmarks.attention [--skip-model]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time


def cpu_ms(fn, repeats: int = 3) -> float:
    fn()  # warm-up: allocator, lazy state
    times = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return 1e3 * statistics.median(times)


def saved_mib(fn) -> float:
    """MiB of tensors autograd saves for backward while `fn()` runs its forward."""
    import torch

    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return total / 2**20


def core_paths(p: float = 0.1) -> dict:
    """name -> forward function (q, k, v, allowed) -> (B, h, Tq, e), all with dropout p."""
    import torch.nn.functional as F
    from torch.utils.checkpoint import checkpoint

    from affectune.models import layers as L

    def explicit(q, k, v, allowed):
        return L.attention(q, k, v, allowed, p, need_weights=True)[0]

    return {
        "explicit (composite)": explicit,
        "SDPA, dropout_p (math)": lambda q, k, v, a: F.scaled_dot_product_attention(q, k, v, attn_mask=a, dropout_p=p),
        "checkpoint(explicit)": lambda q, k, v, a: checkpoint(explicit, q, k, v, a, use_reentrant=False),
        "chunked (ours)": lambda q, k, v, a: L.chunked_dropout_attention(q, k, v, a, p),
    }


def bench_core(B=16, h=10, Tq=500, Tk=375, e=5) -> list[dict]:
    import torch

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(B, h, T, e, generator=g).requires_grad_() for T in (Tq, Tk, Tk))
    lengths = torch.randint(Tk // 2, Tk + 1, (B,), generator=g)
    allowed = (torch.arange(Tk) < lengths[:, None])[:, None, None, :]  # (B, 1, 1, Tk)
    rows = []
    for name, fn in core_paths().items():
        step = lambda fn=fn: fn(q, k, v, allowed).square().sum().backward()  # noqa: E731
        rows.append({"path": name, "fwd_bwd_ms": cpu_ms(step), "saved_mib": saved_mib(lambda fn=fn: fn(q, k, v, allowed))})
    return rows


def bench_model() -> list[dict]:
    """One mult step at MMSA's MOSI width, 16 MOSI-shaped samples, composite against chunked path."""
    import torch

    from affectune.data import load
    from affectune.loader import EpochBatches, preload
    from affectune.models import build_model
    from affectune.models import layers as L
    from benchmarks.mmsa_file import write_mosi_like
    from benchmarks.peers import MULT_AT_MMSA_WIDTH

    with tempfile.TemporaryDirectory() as tmp:
        write_mosi_like(f"{tmp}/mosi.pkl", 16, 16, 32, seed=0)
        dataset = load(f"mmsa:{tmp}/mosi.pkl")
    batch = next(iter(EpochBatches(preload(dataset, "train"), 16, seed=0)))
    torch.manual_seed(0)
    model = build_model("mult", {**MULT_AT_MMSA_WIDTH, "dropout": 0.1}, dataset.spec()).train()
    chunked = L.attention

    def composite(q, k, v, allowed, p=0.0, need_weights=False):  # the explicit path whenever p > 0
        out, weights = chunked(q, k, v, allowed, p, need_weights or p > 0.0)
        return out, weights if need_weights else None

    rows = []
    for name, attention in (("explicit (composite)", composite), ("chunked (ours)", chunked)):
        L.attention = attention
        try:
            step = lambda: model(batch)["pred"].square().mean().backward()  # noqa: E731
            rows.append({"path": name, "step_cpu_ms": cpu_ms(step, repeats=1),
                         "saved_mib": saved_mib(lambda: model(batch))})
        finally:
            L.attention = chunked
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.attention", description=__doc__.splitlines()[0])
    ap.add_argument("--skip-model", action="store_true", help="only the attention core")
    a = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    print("attention core, fwd + bwd, (16, 10, 500, 375, e 5), dropout 0.1, 1 thread:")
    core = bench_core()
    ref = core[0]
    for r in core:
        print(f"  {r['path']:24s} {r['fwd_bwd_ms']:7.0f} ms CPU ({ref['fwd_bwd_ms'] / r['fwd_bwd_ms']:4.2f}x)  "
              f"kept for backward {r['saved_mib']:6.0f} MiB ({r['saved_mib'] / ref['saved_mib']:4.2f}x)")
    if a.skip_model:
        return
    print("one mult step at MMSA's MOSI width, 16 MOSI-shaped samples, dropout 0.1, 1 thread:")
    rows = bench_model()
    for r in rows:
        print(f"  {r['path']:24s} {r['step_cpu_ms']:7.0f} ms CPU ({rows[0]['step_cpu_ms'] / r['step_cpu_ms']:4.2f}x)  "
              f"kept for backward {r['saved_mib']:6.0f} MiB ({r['saved_mib'] / rows[0]['saved_mib']:4.2f}x)")


if __name__ == "__main__":
    main()
