/* Micro-benchmarks of engine internals, for cld-bench only (bench/bench.c is
 * linked into cld-bench, not into the library). Not a stable API: the rows
 * and their definitions may change with the benchmark. Same thread-safety as
 * the engine: one cld_ctx per thread. */
#ifndef CLDIFFUSION_BENCH_H
#define CLDIFFUSION_BENCH_H

#include "cldiffusion/cldiffusion.h"

#ifdef __cplusplus
extern "C" {
#endif

/* GFLOPS of the engine's GEMM (CLBlast, row-major, as the ops call it):
 * C (M, N) = A (M, K) B (K, N), `batch` such products (strided batched GEMM
 * when batch > 1). Median of `iters` timed samples after one warm-up; each
 * sample repeats the product enough times for about 2 GFLOP. Inputs are
 * random. */
cld_status cld_bench_gemm(cld_ctx *ctx, int batch, int m, int n, int k, int iters, double *gflops);

/* GFLOPS of cld_op_conv2d, 3x3, stride 1, pad 1, with bias: x (N, C, H, W),
 * w (Co, C, 3, 3). Forward counts 2*N*Co*H*W*C*9 FLOPs; backward (input and
 * weight gradients) twice that, timed as time(fwd + bwd graph) - time(fwd
 * graph). Median of `iters` runs after one warm-up each. */
cld_status cld_bench_conv(cld_ctx *ctx, int n, int c, int h, int w, int co, int iters, double *fwd_gflops,
                          double *bwd_gflops);

#ifdef __cplusplus
}
#endif
#endif
