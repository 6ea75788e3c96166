/* Softmax over the last dimension, forward and backward. x (R, D) row-major;
 * one work-group per row, of any power-of-two size (the host picks 1 on
 * CPUs, 64 on GPUs). Each work-item walks the row in float8 chunks strided
 * by the work-group size, then a tail; reductions finish in local memory
 * (`part`, one float per work-item). Every buffer argument is followed by
 * its offset in floats. */

/* max (is_max) or sum of v over the work-group, returned to every work-item */
inline float sm_wg_reduce(__local float *part, float v, int is_max)
{
    int l = get_local_id(0), ls = get_local_size(0);
    part[l] = v;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int s = ls / 2; s > 0; s >>= 1) {
        if (l < s) part[l] = is_max ? fmax(part[l], part[l + s]) : part[l] + part[l + s];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    float r = part[0];
    barrier(CLK_LOCAL_MEM_FENCE); /* part is reused by the next call */
    return r;
}

inline float sm_hsum8(float8 v)
{
    float4 a = v.lo + v.hi;
    float2 b = a.lo + a.hi;
    return b.x + b.y;
}

/* y = exp(x - max) / sum exp(x - max). May run in place (y == x): after the
 * max, every element is read and written by the same work-item. */
__kernel void softmax_fwd(__global const float *x, int xo, __global float *y, int yo, int D,
                          __local float *part)
{
    int l = get_local_id(0), ls = get_local_size(0), d8 = D & ~7;
    size_t base = (size_t)get_group_id(0) * D;
    __global const float *p = x + xo + base;
    __global float *q = y + yo + base;
    float8 m8 = (float8)(-INFINITY);
    for (int j = 8 * l; j < d8; j += 8 * ls) m8 = fmax(m8, vload8(0, p + j));
    float4 m4 = fmax(m8.lo, m8.hi);
    float2 m2 = fmax(m4.lo, m4.hi);
    float m = fmax(m2.x, m2.y);
    for (int j = d8 + l; j < D; j += ls) m = fmax(m, p[j]);
    m = sm_wg_reduce(part, m, 1);
    float8 s8 = (float8)(0.0f);
    for (int j = 8 * l; j < d8; j += 8 * ls) {
        float8 e = exp(vload8(0, p + j) - m);
        vstore8(e, 0, q + j);
        s8 += e;
    }
    float s = sm_hsum8(s8);
    for (int j = d8 + l; j < D; j += ls) {
        float e = exp(p[j] - m);
        q[j] = e;
        s += e;
    }
    float inv = 1.0f / sm_wg_reduce(part, s, 0);
    for (int j = 8 * l; j < d8; j += 8 * ls) vstore8(vload8(0, q + j) * inv, 0, q + j);
    for (int j = d8 + l; j < D; j += ls) q[j] *= inv;
}

/* dx = y * (dy - sum(dy * y)). May run in place on y. */
__kernel void softmax_bwd(__global const float *y, int yo, __global const float *dy, int dyo,
                          __global float *dx, int dxo, int D, __local float *part)
{
    int l = get_local_id(0), ls = get_local_size(0), d8 = D & ~7;
    size_t base = (size_t)get_group_id(0) * D;
    __global const float *yp = y + yo + base, *dp = dy + dyo + base;
    __global float *op = dx + dxo + base;
    float8 s8 = (float8)(0.0f);
    for (int j = 8 * l; j < d8; j += 8 * ls) s8 += vload8(0, yp + j) * vload8(0, dp + j);
    float s = sm_hsum8(s8);
    for (int j = d8 + l; j < D; j += ls) s += yp[j] * dp[j];
    s = sm_wg_reduce(part, s, 0);
    for (int j = 8 * l; j < d8; j += 8 * ls)
        vstore8(vload8(0, yp + j) * (vload8(0, dp + j) - s), 0, op + j);
    for (int j = d8 + l; j < D; j += ls) op[j] = yp[j] * (dp[j] - s);
}
