# The GPU probes' timers and the attention calls they share, imported by scripts/probe_*.py
# (Python finds this file beside the script).
import torch
import torch.nn.functional as F
from torch.nn.attention import sdpa_kernel, SDPBackend


def median_us(fn, reps=40, warmup=5):
    """Median of `reps` timings of fn() in microseconds, each between CUDA events, after `warmup` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record(); fn(); e.record(); torch.cuda.synchronize()
        times.append(s.elapsed_time(e) * 1000.0)
    return sorted(times)[len(times) // 2]


def graph_us(layer, layers, reps=30, warmup=3):
    """Median time in microseconds of layer(0), ..., layer(layers - 1) captured as one CUDA graph (as
    the model's step replays its layers), after three eager calls on a side stream (cuDNN's plans and
    the allocator's pools exist before the capture)."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for i in range(3):
            layer(i)
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for i in range(layers):
            layer(i)
    return median_us(g.replay, reps=reps, warmup=warmup)


def cudnn_rows(q, k, v, rows, queries=1024):
    """cuDNN's attention of the first `queries` of q [H, N, D] over rows [0, rows) of k, v [H, T, D]."""
    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
        return F.scaled_dot_product_attention(q[None, :, :queries], k[None, :, :rows], v[None, :, :rows])


def flash_tail(q, k, v, rows, first=1024):
    """Flash attention (its split-KV kernel for so few queries) of q's rows from `first` on over rows
    [0, rows) of k, v: the query tail that cuDNN's whole tiles leave."""
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        return F.scaled_dot_product_attention(q[None, :, first:], k[None, :, :rows], v[None, :, :rows])


def beside(side, work, main):
    """work() on the stream `side`, forked before and joined after main() on the current stream."""
    cur = torch.cuda.current_stream()
    side.wait_stream(cur)
    with torch.cuda.stream(side):
        work()
    main()
    cur.wait_stream(side)
