# How does cuDNN's attention time grow with the key rows on the H200 (1024 queries, 16 heads,
# d 64, bf16), and the 17-query tail's split-KV flash call beside it? Times 24 calls as one CUDA
# graph per row count, as the model's step replays them. PyTorch only; on the GPU machine:
# (cd scripts && python3 probe_cudnn_rows.py)
import torch
from cuda_timing import cudnn_rows, flash_tail, graph_us

torch.manual_seed(0)
dev, dt, H, D, NQ, LAYERS = 'cuda', torch.bfloat16, 16, 64, 1041, 24
CAP = 22528
q = torch.randn(H, NQ, D, device=dev, dtype=dt)
k = torch.randn(H, CAP, D, device=dev, dtype=dt)
v = torch.randn(H, CAP, D, device=dev, dtype=dt)


def timed(layer):
    return graph_us(lambda i: layer(), LAYERS, reps=20) / LAYERS


print('rows  cuDNN(1024 q) us  tail(17 q) us  both us  (a layer)')
for rows in list(range(12288, 22529, 512)) + [16384 + 64, 16384 + 128, 16384 + 256, 17000, 17697 + 1041]:
    print(f'{rows:6d} {timed(lambda: cudnn_rows(q, k, v, rows)):8.1f} {timed(lambda: flash_tail(q, k, v, rows)):8.1f} {timed(lambda: (cudnn_rows(q, k, v, rows), flash_tail(q, k, v, rows))):8.1f}', flush=True)
