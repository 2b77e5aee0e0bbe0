# Is cuDNN's attention over a layer's cache bound by L2 misses on the H200 (1024 queries, 16
# heads, d 64, bf16, ~18k key rows)? Each layer's K and V (about 72 MB) exceed the 50 MB L2; if
# cuDNN's persistent blocks take their (query tile, head) items across all heads at once, the
# heads' rows are fetched from HBM several times. Here every layer has its own cold K and V (as
# the model's 24 global layers do) and the call is made over all 16 heads at once, or over groups
# of 8 or 4 heads (one call each, outputs written into one tensor), timed as one CUDA graph of 24
# layers. PyTorch only; on the GPU machine: (cd scripts && python3 probe_cudnn_heads.py)
import torch
import torch.nn.functional as F
from torch.nn.attention import sdpa_kernel, SDPBackend
from cuda_timing import graph_us

torch.manual_seed(0)
dev, dt, H, D, NQ, LAYERS = 'cuda', torch.bfloat16, 16, 64, 1024, 24
CAP = 18944
q = torch.randn(LAYERS, H, NQ, D, device=dev, dtype=dt)
k = torch.randn(LAYERS, H, CAP, D, device=dev, dtype=dt)
v = torch.randn(LAYERS, H, CAP, D, device=dev, dtype=dt)
out = torch.empty(LAYERS, H, NQ, D, device=dev, dtype=dt)


def layer(i, rows, group, hot):
    j = 0 if hot else i
    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
        for h in range(0, H, group):
            out[i, h:h + group] = F.scaled_dot_product_attention(q[j, None, h:h + group], k[j, None, h:h + group, :rows],
                                                                 v[j, None, h:h + group, :rows])[0]


def timed(rows, group, hot):
    return graph_us(lambda i: layer(i, rows, group, hot), LAYERS, reps=20) / LAYERS


for rows in (16384, 17664, 17697, 18432):
    for hot in (True, False):
        print(f'rows {rows:6d} {"same K/V every layer" if hot else "own K/V per layer  "}: ' +
              '  '.join(f'{group:2d} heads a call {timed(rows, group, hot):6.1f} us' for group in (16, 8, 4)), flush=True)
