/* Mean squared error loss. Every buffer argument is followed by its offset in
 * floats. Reductions use work-groups of exactly 64 and a fixed-order tree, so
 * results are bit-reproducible (no float atomics). pred and target are
 * (N, M) with M = C*H*W. */

#define LS 64
#define MSE_CHUNK 4096 /* elements of one sample summed by one work-group */

/* Sum over the work-group of `acc`; the result is valid in every lane. */
inline float group_sum(__local float *part, float acc)
{
    int l = get_local_id(0);
    part[l] = acc;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int s = LS / 2; s > 0; s >>= 1) {
        if (l < s) part[l] += part[l + s];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    float r = part[0];
    barrier(CLK_LOCAL_MEM_FENCE);
    return r;
}

/* sum_{j in [beg, end)} (pred[base+j] - target[base+j])^2 over the group. */
inline float sqdiff_sum(__global const float *pred, int po, __global const float *target, int to,
                        int base, int beg, int end, __local float *part)
{
    float acc = 0.0f;
    for (int j = beg + (int)get_local_id(0); j < end; j += LS) {
        float d = pred[po + base + j] - target[to + base + j];
        acc += d * d;
    }
    return group_sum(part, acc);
}

/* Stage 1: part[n * nchunk + c] = sum of squared differences of chunk c of
 * sample n. One work-group per (n, c). */
__kernel void mse_partial(__global const float *pred, int po, __global const float *target, int to,
                          __global float *part, int pao, int M, int nchunk)
{
    __local float sh[LS];
    int gid = get_group_id(0);
    int n = gid / nchunk, c = gid % nchunk;
    int beg = c * MSE_CHUNK, end = min(M, beg + MSE_CHUNK);
    float s = sqdiff_sum(pred, po, target, to, n * M, beg, end, sh);
    if (get_local_id(0) == 0) part[pao + gid] = s;
}

/* Stage 2 (one work-group): loss = inv * sum_n w_n sum_c part[n, c],
 * inv = 1 / (N M). */
__kernel void mse_final(__global const float *part, int pao, __global const float *w, int wo, int has_w,
                        __global float *loss, int lo, int N, int nchunk, float inv)
{
    __local float sh[LS];
    float acc = 0.0f;
    for (int n = get_local_id(0); n < N; n += LS) {
        float s = 0.0f;
        for (int c = 0; c < nchunk; c++) s += part[pao + n * nchunk + c];
        acc += (has_w ? w[wo + n] : 1.0f) * s;
    }
    float s = group_sum(sh, acc);
    if (get_local_id(0) == 0) loss[lo] = s * inv;
}

/* dx[i] = scale * dl * w_{i / M} * (pred[i] - target[i]); scale = +-2 / (N M). */
__kernel void mse_grad(__global const float *pred, int po, __global const float *target, int to,
                       __global const float *w, int wo, int has_w, __global const float *dl, int dlo,
                       __global float *dx, int dxo, int n, int M, float scale)
{
    int i = get_global_id(0);
    if (i >= n) return;
    float f = scale * dl[dlo];
    if (has_w) f *= w[wo + i / M];
    dx[dxo + i] = f * (pred[po + i] - target[to + i]);
}

/* dw[n] = scale * dl * sum_j (pred[n, j] - target[n, j])^2; scale = 1 / (N M).
 * One work-group per sample. */
__kernel void mse_wgrad(__global const float *pred, int po, __global const float *target, int to,
                        __global const float *dl, int dlo, __global float *dw, int dwo, int M,
                        float scale)
{
    __local float sh[LS];
    int n = get_group_id(0);
    float s = sqdiff_sum(pred, po, target, to, n * M, 0, M, sh);
    if (get_local_id(0) == 0) dw[dwo + n] = scale * dl[dlo] * s;
}
