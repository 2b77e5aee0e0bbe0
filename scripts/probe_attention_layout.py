# Does torch's SDPA hand its output back in the queries' memory layout? If queries laid out as
# [N, H, D] (a [1, H, N, D] view with strides of BNHD) give an output laid out the same way, the
# blocks' head merge (o [H, N, D] -> [N, H*D]) is a view instead of a copy. Prints, per backend and
# layout, the output's strides, the attention time and the merge copy's time (CUDA events,
# median of 40). PyTorch only; on the GPU machine: python3 scripts/probe_attention_layout.py
import torch, torch.nn.functional as F
from torch.nn.attention import sdpa_kernel, SDPBackend
from cuda_timing import median_us as timed
torch.manual_seed(0)
dev = 'cuda'
def make(n, layout, h=16):
    if layout == 'bhnd': return torch.randn(1, h, n, 64, device=dev, dtype=torch.bfloat16)
    return torch.randn(1, n, h, 64, device=dev, dtype=torch.bfloat16).transpose(1, 2)  # bnhd memory
def merge(o):  # [1, H, N, D] -> [N, H*D], a copy unless o is laid out as BNHD
    return o[0].transpose(0, 1).reshape(o.size(2), -1)
for nk in (1041, 17425):
    for q_layout in ('bhnd', 'bnhd'):
        for kv_layout in ('bhnd', 'bnhd'):
            q, k, v = make(1041, q_layout), make(nk, kv_layout), make(nk, kv_layout)
            for name, b in (('cudnn', SDPBackend.CUDNN_ATTENTION), ('flash', SDPBackend.FLASH_ATTENTION)):
                try:
                    with sdpa_kernel(b):
                        o = F.scaled_dot_product_attention(q, k, v)
                        t = timed(lambda: F.scaled_dot_product_attention(q, k, v))
                    view = merge(o).data_ptr() == o.data_ptr()
                    tm = timed(lambda: merge(o).contiguous())
                    print('keys %5d q %s kv %s %-5s: %7.1f us, out strides %s, merge %s (%.1f us)' %
                          (nk, q_layout, kv_layout, name, t, tuple(o.stride()), 'a view' if view else 'a copy', tm), flush=True)
                except Exception as ex:
                    print('keys %5d q %s kv %s %-5s: fails (%s)' % (nk, q_layout, kv_layout, name, str(ex).splitlines()[0][:80]), flush=True)
