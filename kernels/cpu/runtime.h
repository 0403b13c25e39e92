// Process-wide settings for the CPU path, called once at the start of a program (the CLI, benchmarks).
#pragma once

namespace xv::cpu {

// Keeps freed activation buffers in the heap instead of returning them to the kernel after each step
// (glibc maps and unmaps every large block by default: page faults on every training step), as the
// frameworks' caching allocators do.
void tune_allocator();

// Runs one GEMM on every compute thread, so the BLAS reserves its per-thread work buffers now, at start-up, while
// the address space is free: OpenBLAS retries a failing buffer allocation for ever (a hang under `ulimit -v`),
// whereas a later allocation of ours fails as std::bad_alloc with a message.
void warm_up_blas();

}  // namespace xv::cpu
