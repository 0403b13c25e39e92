// Process-wide settings for the CPU path, called once at the start of a program (the CLI, benchmarks).
#pragma once

namespace xv::cpu {

// Keeps freed activation buffers in the heap instead of returning them to the kernel after each step
// (glibc maps and unmaps every large block by default: page faults on every training step), as the
// frameworks' caching allocators do.
void tune_allocator();

}  // namespace xv::cpu
