# How does cuDNN's attention time grow with the key rows on the H200 (1024 queries, 16 heads,
# d 64, bf16), and the 17-query tail's split-KV flash call beside it? Times 24 calls as one CUDA
# graph per row count, as the model's step replays them. PyTorch only; on the GPU machine:
# (cd scripts && python3 probe_cudnn_rows.py)
import torch
import torch.nn.functional as F
from torch.nn.attention import sdpa_kernel, SDPBackend
from cuda_timing import median_us

torch.manual_seed(0)
dev, dt, H, D, NQ, LAYERS = 'cuda', torch.bfloat16, 16, 64, 1041, 24
CAP = 22528
q = torch.randn(H, NQ, D, device=dev, dtype=dt)
k = torch.randn(H, CAP, D, device=dev, dtype=dt)
v = torch.randn(H, CAP, D, device=dev, dtype=dt)


def cudnn(rows):
    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
        return F.scaled_dot_product_attention(q[None, :, :1024], k[None, :, :rows], v[None, :, :rows])


def tail(rows):
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        return F.scaled_dot_product_attention(q[None, :, 1024:], k[None, :, :rows], v[None, :, :rows])


def timed(layer):
    for _ in range(3):
        layer()
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(LAYERS):
            layer()
    return median_us(g.replay, reps=20, warmup=3) / LAYERS


print('rows  cuDNN(1024 q) us  tail(17 q) us  both us  (a layer)')
for rows in list(range(12288, 22529, 512)) + [16384 + 64, 16384 + 128, 16384 + 256, 17000, 17697 + 1041]:
    print(f'{rows:6d} {timed(lambda: cudnn(rows)):8.1f} {timed(lambda: tail(rows)):8.1f} {timed(lambda: (cudnn(rows), tail(rows))):8.1f}', flush=True)
