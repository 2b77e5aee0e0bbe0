# Does splitting the paged layers' small attention calls over their keys pay on the H200? A paged
# global layer attends its first B rows with cuDNN (1024 queries), the 17-query tail over those rows
# with flash attention's split-KV kernel (plus its combine kernel), and the rest of the rows, whose
# count only the device knows, with flash attention's variable-length form over all 1041 queries.
# That last call has 9 query tiles x 16 heads = 144 blocks for 132 SMs: a second wave that is
# almost empty. Here the variable-length call takes S batch elements instead of one, each the same
# queries (copied) over 1/S of the rows, so that the blocks fill the machine; the tail can join the
# same call as batch elements of its own over the B rows (no split-KV or combine kernel). The parts
# would then be merged by log-sum-exp (not timed here: one kernel, about 4-6 us a layer).
# Times 24 layers' worth of each arrangement as one CUDA graph, as the model's step is replayed.
# PyTorch only; on the GPU machine: (cd scripts && python3 probe_remainder_split.py)
import torch
from cuda_timing import beside as on_side, cudnn_rows, flash_tail, graph_us

torch.manual_seed(0)
dev, dt, H, D, NQ, LAYERS = 'cuda', torch.bfloat16, 16, 64, 1041, 24
TAIL = NQ - 1024
aten = torch.ops.aten
B, CAP = 16384, 20480

q = torch.randn(H, NQ, D, device=dev, dtype=dt)
k = torch.randn(H, CAP, D, device=dev, dtype=dt)
v = torch.randn(H, CAP, D, device=dev, dtype=dt)
qt = q.transpose(0, 1)  # [NQ, H, D] view
side = torch.cuda.Stream()


def cudnn(rows, queries=1024):
    return cudnn_rows(q, k, v, rows, queries)


def tail_splitkv(rows):
    return flash_tail(q, k, v, rows)


class Varlen:
    """One variable-length flash call: `tail_parts` elements of the 17 tail queries over rows [0, B)
    and `rest_parts` elements of all the queries over rows [B, R) (each over 1/parts of its rows)."""

    def __init__(self, b, r, tail_parts, rest_parts):
        # (with no tail parts the key view starts at row B, so the offsets count from there)
        self.first = 0 if tail_parts else b
        cu_q, cu_k = [0], [0]
        for i in range(tail_parts):
            cu_q.append(cu_q[-1] + TAIL)
            cu_k.append(b * (i + 1) // tail_parts)
        for i in range(rest_parts):
            cu_q.append(cu_q[-1] + NQ)
            cu_k.append(b - self.first + (r - b) * (i + 1) // rest_parts)
        self.cu_q = torch.tensor(cu_q, device=dev, dtype=torch.int32)
        self.cu_k = torch.tensor(cu_k, device=dev, dtype=torch.int32)
        self.q = torch.empty(cu_q[-1], H, D, device=dev, dtype=dt)
        self.tail_parts, self.rest_parts = tail_parts, rest_parts
        self.max_k = max(cu_k[i + 1] - cu_k[i] for i in range(len(cu_k) - 1))
        self.max_q = NQ if rest_parts else TAIL

    def __call__(self):
        # the queries copied into place: tail parts first, then the whole set per remainder part
        n = 0
        if self.tail_parts == 0 and self.rest_parts == 1:  # (as today: the queries as they are)
            return aten._flash_attention_forward(qt, k[:, self.first:].transpose(0, 1), v[:, self.first:].transpose(0, 1), self.cu_q,
                                                 self.cu_k, self.max_q, self.max_k, 0.0, False, False, scale=0.125)
        for _ in range(self.tail_parts):
            self.q[n:n + TAIL].copy_(qt[1024:])
            n += TAIL
        for _ in range(self.rest_parts):
            self.q[n:n + NQ].copy_(qt)
            n += NQ
        out = aten._flash_attention_forward(self.q, k[:, self.first:].transpose(0, 1), v[:, self.first:].transpose(0, 1), self.cu_q, self.cu_k, self.max_q,
                                            self.max_k, 0.0, False, False, scale=0.125)
        return out


def beside(work, main):
    """work() on the side stream, forked before and joined after main() on the current one."""
    return on_side(side, work, main)


def run(name, layer):
    us = graph_us(layer, LAYERS)
    print(f'  {name:62s} {us / 1000:7.3f} ms for {LAYERS} layers ({us / LAYERS:6.1f} us a layer)', flush=True)


o = Varlen(B, B + 1600, 0, 2)()
print('varlen outputs:', tuple(o[0].shape), 'lse', tuple(o[1].shape))
print(f'{LAYERS} layers, q {NQ}, {H} heads, d {D}, B = {B} rows to cuDNN')
run('cuDNN over B rows alone (1024 queries)', lambda i: cudnn(B))
run('tail by split-KV over B rows alone (today)', lambda i: tail_splitkv(B))
for r in (600, 1600, 2600):
    R = B + r
    print(f'remainder {r} rows (R = {R})')
    for sp in (1, 2, 3, 4, 6, 8):
        f = Varlen(B, R, 0, sp)
        run(f'remainder alone, {sp} parts', lambda i, f=f: f())
    run('today: cuDNN B + split-KV tail, remainder (1 part) beside',
        lambda i, f=Varlen(B, R, 0, 1): beside(f, lambda: (cudnn(B), tail_splitkv(B))))
    for sp in (2, 3, 4, 6, 8):
        f = Varlen(B, R, 0, sp)
        run(f'cuDNN B + split-KV tail, remainder ({sp} parts) beside', lambda i, f=f: beside(f, lambda: (cudnn(B), tail_splitkv(B))))
    for tp, sp in ((8, 2),):
        f = Varlen(B, R, tp, sp)
        run(f'cuDNN B, tail ({tp}) + remainder ({sp}) in one varlen beside', lambda i, f=f: beside(f, lambda: cudnn(B)))
print('the dense bf16 layer: 17,697 kept + 1041 rows')
R = 18738
run('today: cuDNN over R (1024 queries), then split-KV tail', lambda i: (cudnn(R), tail_splitkv(R)))
run('cuDNN over R (1024 queries), split-KV tail beside', lambda i: beside(lambda: tail_splitkv(R), lambda: cudnn(R)))
run('cuDNN over R, all 1041 queries (no tail call)', lambda i: cudnn(R, NQ))
