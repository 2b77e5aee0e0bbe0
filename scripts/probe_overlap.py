# Which parts of a paged layer's attention can run beside each other on the H200? A paged global
# layer (AttentionPath::kDequantRagged) expands its pages into bf16 rows (memory-bound), attends
# the first B rows with cuDNN (1024 queries; the 17-query tail by flash attention) and the rest,
# whose count only the device knows, with flash attention's variable-length form, then merges the
# two by log-sum-exp. Each part waits for the one before it today. This probe times 24 layers'
# worth of each arrangement as one CUDA graph (as the model's step is replayed):
#   - the parts alone, and cuDNN over all the rows (what it would cost with no remainder);
#   - the remainder serial after cuDNN, and on a second stream beside it;
#   - the expansion (a copy moving the same bytes) serial before cuDNN, and beside the previous
#     layer's cuDNN on a second stream (expanded one layer ahead, into two alternating buffers).
# PyTorch only; on the GPU machine: python3 scripts/probe_overlap.py
import torch
from cuda_timing import beside as on_side, cudnn_rows, flash_tail, graph_us

torch.manual_seed(0)
dev, dt, H, D, NQ, LAYERS = 'cuda', torch.bfloat16, 16, 64, 1041, 24
aten = torch.ops.aten
B, R, CAP = 16384, 18018, 20480  # certain rows, all rows (call 115: 16,977 kept + 1041), capacity

q = torch.randn(H, NQ, D, device=dev, dtype=dt)
k = torch.randn(H, CAP, D, device=dev, dtype=dt)
v = torch.randn(H, CAP, D, device=dev, dtype=dt)
# the expansion's stand-in: the packed pages (about 10 MB a layer) are read and 2 x 37 MB of rows
# written; a copy of the rows moves a little more (reads as much as it writes)
src_k, src_v = torch.randn_like(k), torch.randn_like(v)
dst = [(torch.empty_like(k), torch.empty_like(v)) for _ in range(2)]
cu_q = torch.tensor([0, NQ], device=dev, dtype=torch.int32)
cu_k = torch.tensor([0, R - B], device=dev, dtype=torch.int32)
side = torch.cuda.Stream()


def cudnn(rows):
    return cudnn_rows(q, k, v, rows)


def tail(rows):
    return flash_tail(q, k, v, rows)


def certain():
    cudnn(B)
    tail(B)


def remainder():
    # rows [B, CAP) as [T, H, D] views of the head-major storage, the count on the device
    return aten._flash_attention_forward(q.transpose(0, 1), k[:, B:].transpose(0, 1), v[:, B:].transpose(0, 1), cu_q, cu_k,
                                         NQ, CAP - B, 0.0, False, False, scale=0.125)[0]


def expand(i):
    dk, dv = dst[i % 2]
    dk[:, :R].copy_(src_k[:, :R])
    dv[:, :R].copy_(src_v[:, :R])


def beside(work, main):
    """work() on the side stream, forked before and joined after main() on the current one."""
    return on_side(side, work, main)


ARRANGEMENTS = {
    'cuDNN over all R rows (no remainder)': lambda i: (cudnn(R), tail(R)),
    'cuDNN over B rows': lambda i: certain(),
    'remainder alone (flash varlen, R - B rows)': lambda i: remainder(),
    'expansion alone (copy)': lambda i: expand(i),
    'B rows, then remainder (today)': lambda i: (certain(), remainder()),
    'B rows beside the remainder': lambda i: beside(remainder, certain),
    'expansion, then B rows + remainder (today)': lambda i: (expand(i), certain(), remainder()),
    'next expansion beside B rows + remainder': lambda i: beside(lambda: expand(i + 1), lambda: (certain(), remainder())),
    'next expansion beside B rows, remainder beside': lambda i: beside(lambda: (expand(i + 1), remainder()), certain),
}

print(f'{LAYERS} layers, q {NQ}, {H} heads, d {D}: B = {B} rows to cuDNN, R = {R} rows in all')
for name, layer in ARRANGEMENTS.items():
    us = graph_us(layer, LAYERS)
    print(f'  {name:50s} {us / 1000:7.3f} ms for {LAYERS} layers ({us / LAYERS:6.1f} us a layer)')
