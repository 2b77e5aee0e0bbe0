# Can attention over a fixed capacity of key rows, of which only the first `valid` are real, with
# `valid` on the device, cost what attention over the exact rows costs? (The paged caches expand
# their pages into rows whose count only the device knows; with such a call their step has fixed
# shapes and no host copy of the counts.) Call 111's probe_sdpa_padding.py showed that a mask over
# the padding costs cuDNN 50% more; this one times the entries that take the lengths as device
# tensors and skip the padding: cuDNN's ragged (padding-mask) form through _cudnn_attention_forward
# with cumulative lengths, flash attention's variable-length form and its seqused_k, against cuDNN
# over the exact rows; then whether a plan is reused when only the device length changes, and
# whether a CUDA graph of the call, replayed after the device length changed, attends the new rows.
# PyTorch only; on the GPU machine: python3 scripts/probe_ragged_attention.py
import time
import torch
import torch.nn.functional as F
from torch.nn.attention import sdpa_kernel, SDPBackend
from cuda_timing import median_us as timed

torch.manual_seed(0)
dev, dt, H, D, NQ = 'cuda', torch.bfloat16, 16, 64, 1041
aten = torch.ops.aten


def exact(q_thd, k_thd, v_thd, valid):
    """cuDNN SDPA over the first `valid` rows, as [NQ, H, D]."""
    q4 = q_thd.transpose(0, 1).unsqueeze(0)
    k4 = k_thd[:valid].transpose(0, 1).unsqueeze(0)
    v4 = v_thd[:valid].transpose(0, 1).unsqueeze(0)
    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
        return F.scaled_dot_product_attention(q4, k4, v4).squeeze(0).transpose(0, 1)


def cudnn_ragged(q, k, v, cu_q, cu_k, max_k):
    return aten._cudnn_attention_forward(q, k, v, None, cu_q, cu_k, q.size(0), max_k, False, 0.0, False, False, scale=0.125)[0]


def flash_varlen(q, k, v, cu_q, cu_k, max_k):
    return aten._flash_attention_forward(q, k, v, cu_q, cu_k, q.size(0), max_k, 0.0, False, False, scale=0.125)[0]


def flash_seqused(q, k, v, used, max_k):
    return aten._flash_attention_forward(q.unsqueeze(0), k.unsqueeze(0), v.unsqueeze(0), None, None, q.size(0), max_k, 0.0, False,
                                         False, scale=0.125, seqused_k=used)[0].squeeze(0)


def report(name, fn, ref):
    try:
        o = fn()
        torch.cuda.synchronize()
        err = (o.float() - ref.float()).abs().max().item()
        t = timed(fn)
        print(f'  {name:44s} {t:8.1f} us  max|diff| {err:.2e}  out {tuple(o.shape)} strides {o.stride()}')
    except Exception as e:  # noqa: BLE001 (a probe reports every refusal)
        print(f'  {name:44s} refused: {str(e).splitlines()[0][:160]}')


cap = 20480 + NQ
for valid in (17425, 16018, 12000):
    q = torch.randn(NQ, H, D, device=dev, dtype=dt)
    k = torch.randn(cap, H, D, device=dev, dtype=dt)
    v = torch.randn(cap, H, D, device=dev, dtype=dt)
    # the same rows head-major ([H, T, D] storage, as the caches keep them), viewed as [T, H, D]
    k_hm, v_hm, q_hm = (t.transpose(0, 1).contiguous().transpose(0, 1) for t in (k, v, q))
    cu_q = torch.tensor([0, NQ], device=dev, dtype=torch.int32)
    cu_k = torch.tensor([0, valid], device=dev, dtype=torch.int32)
    used = torch.tensor([valid], device=dev, dtype=torch.int32)
    ref = exact(q, k, v, valid)
    print(f'valid {valid} of {cap} rows')
    report('cuDNN over the exact rows (SDPA)', lambda: exact(q, k, v, valid), ref)
    report('cuDNN ragged, tokens-major', lambda: cudnn_ragged(q, k, v, cu_q, cu_k, cap), ref)
    report('cuDNN ragged, head-major rows', lambda: cudnn_ragged(q_hm, k_hm, v_hm, cu_q, cu_k, cap), ref)
    report('cuDNN ragged, 1024 queries (tile-aligned)', lambda: cudnn_ragged(q[:1024], k, v, cu_q.clamp(max=1024), cu_k, cap), ref[:1024])
    report('flash varlen, tokens-major', lambda: flash_varlen(q, k, v, cu_q, cu_k, cap), ref)
    report('flash varlen, head-major rows', lambda: flash_varlen(q_hm, k_hm, v_hm, cu_q, cu_k, cap), ref)
    report('flash seqused_k, tokens-major', lambda: flash_seqused(q, k, v, used, cap), ref)

# Plans: the first call at each new device length with the same capacity (a rebuilt plan costs
# tens of milliseconds).
print('first call at a new device length, same capacity (wall ms):')
q = torch.randn(NQ, H, D, device=dev, dtype=dt)
k = torch.randn(cap, H, D, device=dev, dtype=dt)
v = torch.randn(cap, H, D, device=dev, dtype=dt)
cu_q = torch.tensor([0, NQ], device=dev, dtype=torch.int32)
for name, fn in (('cuDNN ragged', cudnn_ragged), ('flash varlen', flash_varlen)):
    times = []
    for valid in (15000, 15001, 16500, 19000):
        cu_k = torch.tensor([0, valid], device=dev, dtype=torch.int32)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        try:
            fn(q, k, v, cu_q, cu_k, cap)
            torch.cuda.synchronize()
            times.append(f'{(time.perf_counter() - t0) * 1e3:.2f}')
        except Exception as e:  # noqa: BLE001
            times.append('refused: ' + str(e).splitlines()[0][:80])
    print(f'  {name:14s} ' + ' '.join(times))

# CUDA graphs: capture at one device length, change it in place, replay, compare with the exact
# rows at the new length.
print('graph replay after the device length changed:')
for name, fn in (('cuDNN ragged', cudnn_ragged), ('flash varlen', flash_varlen)):
    try:
        cu_k = torch.tensor([0, 14000], device=dev, dtype=torch.int32)
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(3):
                fn(q, k, v, cu_q, cu_k, cap)
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            out = fn(q, k, v, cu_q, cu_k, cap)
        errs = []
        for valid in (14000, 17425, 9000):
            cu_k.copy_(torch.tensor([0, valid], dtype=torch.int32))
            g.replay()
            torch.cuda.synchronize()
            errs.append(f'{valid}: {(out.float() - exact(q, k, v, valid).float()).abs().max().item():.2e}')
        t = timed(g.replay)
        print(f'  {name:14s} ' + ', '.join(errs) + f'; replay {t:.1f} us')
    except Exception as e:  # noqa: BLE001
        print(f'  {name:14s} refused: {str(e).splitlines()[0][:160]}')
