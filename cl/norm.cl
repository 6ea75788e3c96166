/* Group normalisation (optionally fused with SiLU), forward and backward.
 * Every buffer argument is followed by its offset in floats.
 *
 * Layout: x (N, C, HW) with C = G * cpg; group (n, g) is the contiguous run
 * of cpg * HW floats starting at (n * G + g) * cpg * HW. coef (N * C, 4)
 * holds, per (n, c) row, (a, beta[c], mean, rstd) of its group with
 * a = rstd gamma[c], so that the forward pass is v = (x - mean) a + beta[c]
 * (biased variance, as PyTorch).
 *
 * Work-groups: one per group, (n, c) row or channel, of any power-of-two
 * size (the host picks 1 on CPUs, where PoCL runs a work-group of one
 * work-item as plain vector code, and 64 on GPUs). Each work-item walks its
 * run in float8 chunks, strided by the work-group size, then a tail;
 * reductions finish in local memory (`part`, one float2 per work-item). */

inline float gn_hsum8(float8 v)
{
    float4 a = v.lo + v.hi;
    float2 b = a.lo + a.hi;
    return b.x + b.y;
}

/* Sum of v over the work-group, returned to every work-item. */
inline float2 gn_wg_sum(__local float2 *part, float2 v)
{
    int l = get_local_id(0), ls = get_local_size(0);
    part[l] = v;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int s = ls / 2; s > 0; s >>= 1) {
        if (l < s) part[l] += part[l + s];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    float2 r = part[0];
    barrier(CLK_LOCAL_MEM_FENCE); /* part is reused by the next call */
    return r;
}

/* coef of the cpg rows of group grp: mean and variance in two passes. */
__kernel void gn_stats(__global const float *x, int xo, __global const float *gamma, int go,
                       __global const float *beta, int bo, __global float *coef, int co, int C,
                       int HW, int cpg, float eps, __local float2 *part)
{
    int grp = get_group_id(0), l = get_local_id(0), ls = get_local_size(0);
    int cnt = cpg * HW, c8 = cnt & ~7;
    __global const float *p = x + xo + (size_t)grp * cnt;
    float8 s8 = (float8)(0.0f);
    for (int j = 8 * l; j < c8; j += 8 * ls) s8 += vload8(0, p + j);
    float s = gn_hsum8(s8);
    for (int j = c8 + l; j < cnt; j += ls) s += p[j];
    float mean = gn_wg_sum(part, (float2)(s, 0.0f)).x / (float)cnt;
    float8 q8 = (float8)(0.0f);
    for (int j = 8 * l; j < c8; j += 8 * ls) {
        float8 d = vload8(0, p + j) - mean;
        q8 += d * d;
    }
    float q = gn_hsum8(q8);
    for (int j = c8 + l; j < cnt; j += ls) {
        float d = p[j] - mean;
        q += d * d;
    }
    float rstd = 1.0f / sqrt(gn_wg_sum(part, (float2)(q, 0.0f)).x / (float)cnt + eps);
    for (int cc = l; cc < cpg; cc += ls) {
        int row = grp * cpg + cc, c = row % C;
        float a = rstd * gamma[go + c];
        vstore4((float4)(a, beta[bo + c], mean, rstd), 0, coef + co + 4 * (size_t)row);
    }
}

/* v = (x - mean) a + beta; y = v, or silu(v) = v sigmoid(v) if act. One work-group per
 * (n, c) row of HW floats. May run in place (y == x). */
__kernel void gn_apply(__global const float *x, int xo, __global const float *coef, int co,
                       __global float *y, int yo, int HW, int act)
{
    int row = get_group_id(0), l = get_local_id(0), ls = get_local_size(0);
    float4 k = vload4(0, coef + co + 4 * (size_t)row); /* a, beta, mean, rstd */
    __global const float *p = x + xo + (size_t)row * HW;
    __global float *q = y + yo + (size_t)row * HW;
    int h8 = HW & ~7;
    for (int j = 8 * l; j < h8; j += 8 * ls) {
        float8 v = (vload8(0, p + j) - k.z) * k.x + k.y;
        vstore8(act ? v / (1.0f + exp(-v)) : v, 0, q + j);
    }
    for (int j = h8 + l; j < HW; j += ls) {
        float v = (p[j] - k.z) * k.x + k.y;
        q[j] = act ? v / (1.0f + exp(-v)) : v;
    }
}

/* Through the SiLU of the fused op, per (n, c) row, v recomputed from x:
 * dv = dy s (1 + v (1 - s)), s = sigmoid(v). */
__kernel void gn_silu_grad(__global const float *x, int xo, __global const float *coef, int co,
                           __global const float *dy, int dyo, __global float *dv, int dvo, int HW)
{
    int row = get_group_id(0), l = get_local_id(0), ls = get_local_size(0);
    float4 k = vload4(0, coef + co + 4 * (size_t)row); /* a, beta, mean, rstd */
    size_t base = (size_t)row * HW;
    __global const float *p = x + xo + base, *d = dy + dyo + base;
    __global float *q = dv + dvo + base;
    int h8 = HW & ~7;
    for (int j = 8 * l; j < h8; j += 8 * ls) {
        float8 v = (vload8(0, p + j) - k.z) * k.x + k.y;
        float8 s = 1.0f / (1.0f + exp(-v));
        vstore8(vload8(0, d + j) * s * (1.0f + v * (1.0f - s)), 0, q + j);
    }
    for (int j = h8 + l; j < HW; j += ls) {
        float v = (p[j] - k.z) * k.x + k.y;
        float s = 1.0f / (1.0f + exp(-v));
        q[j] = d[j] * s * (1.0f + v * (1.0f - s));
    }
}

/* dx of group norm, one work-group per group:
 *   xhat = (x - mean) rstd,  g = gamma[c] dy
 *   dx = rstd (g - mean(g) - xhat mean(g xhat))   (means over the group) */
__kernel void gn_grad_x(__global const float *x, int xo, __global const float *gamma, int go,
                        __global const float *coef, int co, __global const float *dy, int dyo,
                        __global float *dx, int dxo, int C, int HW, int cpg,
                        __local float2 *part)
{
    int grp = get_group_id(0), l = get_local_id(0), ls = get_local_size(0);
    int c0 = (grp * cpg) % C, h8 = HW & ~7;
    float mean = coef[co + 4 * grp * cpg + 2], rstd = coef[co + 4 * grp * cpg + 3];
    size_t base = (size_t)grp * cpg * HW;
    __global const float *xp = x + xo + base, *dp = dy + dyo + base;
    __global float *op = dx + dxo + base;
    float8 s1 = (float8)(0.0f), s2 = (float8)(0.0f);
    float t1 = 0.0f, t2 = 0.0f;
    for (int cc = 0; cc < cpg; cc++, xp += HW, dp += HW) {
        float gm = gamma[go + c0 + cc];
        for (int j = 8 * l; j < h8; j += 8 * ls) {
            float8 g = gm * vload8(0, dp + j);
            s1 += g;
            s2 += g * (vload8(0, xp + j) - mean);
        }
        for (int j = h8 + l; j < HW; j += ls) {
            float g = gm * dp[j];
            t1 += g;
            t2 += g * (xp[j] - mean);
        }
    }
    float2 m = gn_wg_sum(part, (float2)(gn_hsum8(s1) + t1, gn_hsum8(s2) + t2));
    float inv = 1.0f / (float)(cpg * HW);
    float m1 = m.x * inv, m2 = m.y * inv * rstd; /* mean(g), mean(g xhat) */
    xp = x + xo + base;
    dp = dy + dyo + base;
    for (int cc = 0; cc < cpg; cc++, xp += HW, dp += HW, op += HW) {
        float gm = gamma[go + c0 + cc];
        for (int j = 8 * l; j < h8; j += 8 * ls) {
            float8 xh = (vload8(0, xp + j) - mean) * rstd;
            vstore8(rstd * (gm * vload8(0, dp + j) - m1 - xh * m2), 0, op + j);
        }
        for (int j = h8 + l; j < HW; j += ls) {
            float xh = (xp[j] - mean) * rstd;
            op[j] = rstd * (gm * dp[j] - m1 - xh * m2);
        }
    }
}

/* One work-group per channel c, summing over n and space:
 * with_xhat: dgamma[c] = sum dy * xhat; else dbeta[c] = sum dy. */
__kernel void gn_grad_affine(__global const float *x, int xo, __global const float *coef, int co,
                             __global const float *dy, int dyo, __global float *out, int oo,
                             int N, int C, int HW, int with_xhat, __local float2 *part)
{
    int c = get_group_id(0), l = get_local_id(0), ls = get_local_size(0);
    int h8 = HW & ~7;
    float acc = 0.0f;
    for (int b = 0; b < N; b++) {
        size_t base = ((size_t)b * C + c) * HW;
        __global const float *xp = x + xo + base, *dp = dy + dyo + base;
        float8 s8 = (float8)(0.0f);
        float s = 0.0f;
        if (with_xhat) {
            size_t row = (size_t)b * C + c;
            float mean = coef[co + 4 * row + 2];
            for (int j = 8 * l; j < h8; j += 8 * ls) s8 += vload8(0, dp + j) * (vload8(0, xp + j) - mean);
            for (int j = h8 + l; j < HW; j += ls) s += dp[j] * (xp[j] - mean);
            acc += coef[co + 4 * row + 3] * (gn_hsum8(s8) + s);
        } else {
            for (int j = 8 * l; j < h8; j += 8 * ls) s8 += vload8(0, dp + j);
            for (int j = h8 + l; j < HW; j += ls) s += dp[j];
            acc += gn_hsum8(s8) + s;
        }
    }
    float r = gn_wg_sum(part, (float2)(acc, 0.0f)).x;
    if (l == 0) out[oo + c] = r;
}
