# Can a fixed number of key rows, some of them padding, be attended as fast as the exact rows?
# (The paged caches' valid token counts live on the device; attention over a fixed capacity with
# the padding masked would need no host copy of them.) Times, per backend, SDPA at q = 1041, 16
# heads, d = 64 over the exact rows and over padded rows with an additive key bias (0 / -inf,
# broadcast over heads and queries) or a boolean key mask, and the largest difference between the
# masked and the exact outputs. PyTorch only; on the GPU machine: python3 scripts/probe_sdpa_padding.py
import torch, torch.nn.functional as F
from torch.nn.attention import sdpa_kernel, SDPBackend
from cuda_timing import median_us as timed
torch.manual_seed(0)
dev, dt = 'cuda', torch.bfloat16
backends = (('cudnn', SDPBackend.CUDNN_ATTENTION), ('flash', SDPBackend.FLASH_ATTENTION), ('efficient', SDPBackend.EFFICIENT_ATTENTION))
for valid, slots in ((17425, 64), (16018, 64), (65536 + 1041, 64)):
    pages = (valid + slots - 1) // slots + (valid // 1088)  # a partial page per frame of 1041 tokens
    cap = pages * slots
    q = torch.randn(1, 16, 1041, 64, device=dev, dtype=dt)
    k = torch.randn(1, 16, cap, 64, device=dev, dtype=dt)
    v = torch.randn(1, 16, cap, 64, device=dev, dtype=dt)
    keep = torch.zeros(cap, dtype=torch.bool, device=dev)
    keep[torch.randperm(cap, device=dev)[:valid]] = True
    idx = keep.nonzero().squeeze(1)
    ke, ve = k[:, :, idx].contiguous(), v[:, :, idx].contiguous()
    bias = torch.zeros(cap, device=dev, dtype=dt).masked_fill(~keep, float('-inf'))
    masks = {'none (exact rows)': None,
             'bias [1,1,1,cap] expanded': bias.view(1, 1, 1, cap).expand(1, 16, 1041, cap),
             'bias [1,1,1,cap]': bias.view(1, 1, 1, cap),
             'bool [1,1,1,cap]': keep.view(1, 1, 1, cap)}
    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
        ref = F.scaled_dot_product_attention(q, ke, ve).float()
    print(f'valid {valid} of {cap} rows ({pages} pages of {slots})')
    for name, b in backends:
        for mname, m in masks.items():
            kk, vv = (ke, ve) if m is None else (k, v)
            try:
                with sdpa_kernel(b):
                    o = F.scaled_dot_product_attention(q, kk, vv, attn_mask=m)
                    t = timed(lambda: F.scaled_dot_product_attention(q, kk, vv, attn_mask=m))
                err = (o.float() - ref).abs().max().item()
                print(f'  {name:9s} {mname:28s} {t:8.1f} us  max|diff| {err:.2e}')
            except Exception as e:
                print(f'  {name:9s} {mname:28s} refused: {str(e).splitlines()[0][:100]}')
