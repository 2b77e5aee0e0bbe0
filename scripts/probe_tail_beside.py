# Does the 17-query tail (flash split-KV over all the rows) cost less beside cuDNN's 1024 queries
# than after them? cuDNN's Hopper kernel runs 128 query tiles on a grid of 132 persistent blocks,
# so four SMs have nothing to do while it runs. Times 24 layers as one CUDA graph (as the model's
# step replays them): cuDNN alone, the tail alone, one after the other, and the tail on a second
# stream forked before cuDNN's call (tail queued first, or cuDNN first). PyTorch only; on the GPU
# machine: (cd scripts && python3 probe_tail_beside.py)
import torch
from cuda_timing import beside, cudnn_rows, flash_tail, graph_us

torch.manual_seed(0)
dev, dt, H, D, NQ, LAYERS = 'cuda', torch.bfloat16, 16, 64, 1041, 24
CAP = 20480
# a K, V pair per layer (each layer's rows cold in L2, as in the model)
qs = [torch.randn(H, NQ, D, device=dev, dtype=dt) for _ in range(LAYERS)]
ks = [torch.randn(H, CAP, D, device=dev, dtype=dt) for _ in range(LAYERS)]
vs = [torch.randn(H, CAP, D, device=dev, dtype=dt) for _ in range(LAYERS)]
side = torch.cuda.Stream()


def timed(layer):
    return graph_us(layer, LAYERS, reps=20) / LAYERS


def tail_first(i, rows):
    beside(side, lambda: flash_tail(qs[i], ks[i], vs[i], rows), lambda: cudnn_rows(qs[i], ks[i], vs[i], rows))


def cudnn_first(i, rows):
    cur = torch.cuda.current_stream()
    side.wait_stream(cur)
    cudnn_rows(qs[i], ks[i], vs[i], rows)
    with torch.cuda.stream(side):
        flash_tail(qs[i], ks[i], vs[i], rows)
    cur.wait_stream(side)


print('rows   cuDNN  tail  after  beside(tail queued first)  beside(cuDNN first)   (us a layer)')
for rows in (16384, 17664, 18432, 18688):
    c = timed(lambda i: cudnn_rows(qs[i], ks[i], vs[i], rows))
    t = timed(lambda i: flash_tail(qs[i], ks[i], vs[i], rows))
    both = timed(lambda i: (cudnn_rows(qs[i], ks[i], vs[i], rows), flash_tail(qs[i], ks[i], vs[i], rows)))
    b1 = timed(lambda i: tail_first(i, rows))
    b2 = timed(lambda i: cudnn_first(i, rows))
    print(f'{rows:6d} {c:6.1f} {t:5.1f} {both:6.1f} {b1:8.1f} {b2:8.1f}', flush=True)
