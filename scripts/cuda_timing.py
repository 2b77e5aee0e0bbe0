# The GPU probes' timer, imported by scripts/probe_*.py (Python finds it beside the script).
import torch


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
