# Global attention at q = 1041: is cuDNN's time set by its 128-row query tiles (144 tiles of 16 heads
# on 132 SMs)? Times SDPA for query counts around 1024 and the remainder rows by other means.
import torch, torch.nn.functional as F
from torch.nn.attention import sdpa_kernel, SDPBackend
torch.manual_seed(0)
dev = 'cuda'
def timed(fn, reps=40):
    for _ in range(5): fn()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize(); s.record()
    for _ in range(reps): fn()
    e.record(); torch.cuda.synchronize()
    return s.elapsed_time(e) / reps * 1000.0
def mk(n, h=16):
    return torch.randn(1, h, n, 64, device=dev, dtype=torch.bfloat16)
for nk in (1041, 17425, 18738, 65536):
    k, v = mk(nk), mk(nk)
    for nq in (1041, 1024, 1025, 1040, 1152, 896, 512, 17):
        q = mk(nq)
        row = []
        for name, b in (('cudnn', SDPBackend.CUDNN_ATTENTION), ('flash', SDPBackend.FLASH_ATTENTION), ('eff', SDPBackend.EFFICIENT_ATTENTION)):
            try:
                with sdpa_kernel(b):
                    row.append('%s %.1f' % (name, timed(lambda: F.scaled_dot_product_attention(q, k, v))))
            except Exception as ex:
                row.append('%s fail' % name)
        print('nk %6d nq %5d  %s' % (nk, nq, '  '.join(row)), flush=True)
    # the remainder rows by plain matrix products: S = qK^T (bf16 out), softmax in fp32, P V
    q = mk(17)
    def mathpath():
        s = torch.matmul(q, k.transpose(-1, -2)).float() * 0.125
        p = torch.softmax(s, -1).to(torch.bfloat16)
        return torch.matmul(p, v)
    print('nk %6d nq 17 matmul-softmax-matmul %.1f us' % (nk, timed(mathpath)), flush=True)
    # split: 1024 by cuDNN + 17 by matmul path, plus the cat
    q1 = mk(1041)
    def split():
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            a = F.scaled_dot_product_attention(q1[:, :, :1024], k, v)
        s = torch.matmul(q1[:, :, 1024:], k.transpose(-1, -2)).float() * 0.125
        b = torch.matmul(torch.softmax(s, -1).to(torch.bfloat16), v)
        return torch.cat([a, b], 2)
    print('nk %6d split 1024 cudnn + 17 matmul + cat: %.1f us' % (nk, timed(split)), flush=True)
    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
        ref = F.scaled_dot_product_attention(q1, k, v)
    print('   split vs one call max abs diff %.3g' % (split() - ref).abs().max().item())
