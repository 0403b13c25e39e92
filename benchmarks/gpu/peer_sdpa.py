"""The attention peer of bench_gpu_kernels: PyTorch's scaled_dot_product_attention with the cuDNN backend
(fused flash SDPA) and with PyTorch's own flash backend, bf16, on the shapes bench_gpu_kernels times (the
same B, T, heads, head dim and causality), forward and forward+backward, median of CUDA-event timings after
warm-up. Prints one JSON object: {"rows": [{"name", "backend", "value" (TFLOP/s)}]}. Run on the GPU machine by
benchmarks/gpu/check.sh; needs torch with CUDA.
"""
import json
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

SHAPES = [("phi3 T=577", 4, 577, 32, 96, True), ("phi3 T=1024", 2, 1024, 32, 96, True),
          ("phi3 T=2048", 1, 2048, 32, 96, True), ("phi3 T=4096", 1, 4096, 32, 96, True),
          ("clip-l T=577", 8, 577, 16, 64, False)]


def median_ms(fn, warm=3, reps=20):
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    times.sort()
    return times[len(times) // 2]


def main():
    quick = "--quick" in sys.argv
    rows = []
    for name, B, T, H, D, causal in SHAPES[:2] if quick else SHAPES:
        g = torch.Generator(device="cuda").manual_seed(0)
        q, k, v = (torch.rand(B, H, T, D, device="cuda", generator=g, dtype=torch.bfloat16).mul_(2).sub_(1)
                   .requires_grad_() for _ in range(3))
        dout = torch.rand(B, H, T, D, device="cuda", generator=g, dtype=torch.bfloat16)
        flops = 4.0 * B * H * T * T * D * (0.5 if causal else 1.0)
        for label, be in (("cudnn", SDPBackend.CUDNN_ATTENTION), ("torch-flash", SDPBackend.FLASH_ATTENTION)):
            try:
                with sdpa_kernel(be):
                    fwd = median_ms(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=causal))

                    def fwd_bwd():
                        o = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
                        torch.autograd.grad(o, (q, k, v), dout)

                    both = median_ms(fwd_bwd)
            except RuntimeError as e:  # a backend that does not take the shape
                rows.append({"name": name, "backend": label, "error": str(e).splitlines()[0][:120]})
                continue
            rows.append({"name": name + " fwd", "backend": label, "value": flops / (fwd * 1e-3) / 1e12})
            rows.append({"name": name + " fwd+bwd", "backend": label, "value": 3.5 * flops / (both * 1e-3) / 1e12})
    print(json.dumps({"torch": torch.__version__, "device": torch.cuda.get_device_name(), "rows": rows}))


if __name__ == "__main__":
    main()
