/* Group normalisation (optionally fused with SiLU), forward and backward.
 * Every buffer argument is followed by its offset in floats.
 *
 * Layout: x (N, C, HW) with C = G * cpg; group (n, g) is the contiguous run
 * of cpg * HW floats starting at (n * G + g) * cpg * HW. coef (N * C, 4)
 * holds, per (n, c) row, (a, beta[c], mean, rstd) of its group with
 * a = rstd gamma[c], so that the forward pass is v = (x - mean) a + beta[c]
 * (biased variance, as PyTorch).
 *
 * Work-groups: one per group (gn_fused, gn_bwd_fused) or (n, c) row
 * (gn_bwd_partials), of any power-of-two
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

/* coef of the cpg rows of group grp (mean and variance in two passes),
 * then y = v, or silu(v) = v sigmoid(v) if act, v = (x - mean) a + beta,
 * from x, which the two passes over the group left in a CPU core's cache
 * (the statistics once were a kernel of their own, gn_stats, and y
 * another, gn_apply: the same sums in the same order). May run in place
 * (y == x). */
__kernel void gn_fused(__global const float *x, int xo, __global const float *gamma, int go,
                       __global const float *beta, int bo, __global float *coef, int co, __global float *y,
                       int yo, int C, int HW, int cpg, float eps, int act, __local float2 *part)
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
        vstore4((float4)(rstd * gamma[go + c], beta[bo + c], mean, rstd), 0, coef + co + 4 * (size_t)row);
    }
    int h8 = HW & ~7;
    for (int cc = 0; cc < cpg; cc++) {
        int row = grp * cpg + cc, c = row % C;
        float4 k = (float4)(rstd * gamma[go + c], beta[bo + c], mean, rstd);
        __global const float *pr = x + xo + (size_t)row * HW;
        __global float *qr = y + yo + (size_t)row * HW;
        for (int j = 8 * l; j < h8; j += 8 * ls) {
            float8 v = (vload8(0, pr + j) - k.z) * k.x + k.y;
            vstore8(act ? v / (1.0f + exp(-v)) : v, 0, qr + j);
        }
        for (int j = h8 + l; j < HW; j += ls) {
            float v = (pr[j] - k.z) * k.x + k.y;
            qr[j] = act ? v / (1.0f + exp(-v)) : v;
        }
    }
}

/* The backward pass (gn_bwd_fused, or gn_bwd_partials where x needs no
 * gradient). With dv = dL/dv (through the SiLU if act: dv = dy s
 * (1 + v (1 - s)), s = sigmoid(v), v recomputed from x) and, per (n, c)
 * row, S1 = sum dv and S2 = sum dv (x - mean):
 *   dx     = a dv - sum_c a S1 / n - (x - mean) rstd^2 sum_c a S2 / n
 *            (sums over the group's cpg rows, n = cpg HW elements; the
 *            usual rstd (g - mean(g) - xhat mean(g xhat)), g = gamma dv,
 *            rewritten with a = rstd gamma)
 *   dgamma = sum_n rstd S2,   dbeta = sum_n S1   (gn_bwd_affine, an item per c).
 * The sigmoid here uses the prelude's cld_exp (the forward pass keeps exp()). */
inline float gn_dv(float x, float dy, float4 k, int act)
{
    if (!act) return dy;
    float v = (x - k.z) * k.x + k.y, s = 1.0f / (1.0f + cld_exp(-v));
    return dy * s * (1.0f + v * (1.0f - s));
}
inline float8 gn_dv8(float8 x, float8 dy, float4 k, int act)
{
    if (!act) return dy;
    float8 v = (x - k.z) * k.x + k.y, s = 1.0f / (1.0f + cld_exp8(-v));
    return dy * s * (1.0f + v * (1.0f - s));
}

/* (S1, S2) of the row of HW floats at x + base, dy + base, summed over the
 * work-group (every work-item gets them); its dv also into vp (dx's
 * block) unless vp is NULL. k: the row's coef. */
inline float2 gn_row_sums(__global const float *x, __global const float *dy, __global float *vp, int HW,
                          float4 k, int act, __local float2 *lpart)
{
    int l = get_local_id(0), ls = get_local_size(0), h8 = HW & ~7;
    float8 s1 = (float8)(0.0f), s2 = (float8)(0.0f);
    float t1 = 0.0f, t2 = 0.0f;
    for (int j = 8 * l; j < h8; j += 8 * ls) {
        float8 xv = vload8(0, x + j), d = gn_dv8(xv, vload8(0, dy + j), k, act);
        if (vp) vstore8(d, 0, vp + j);
        s1 += d;
        s2 += d * (xv - k.z);
    }
    for (int j = h8 + l; j < HW; j += ls) {
        float d = gn_dv(x[j], dy[j], k, act);
        if (vp) vp[j] = d;
        t1 += d;
        t2 += d * (x[j] - k.z);
    }
    return gn_wg_sum(lpart, (float2)(gn_hsum8(s1) + t1, gn_hsum8(s2) + t2));
}

/* part (N*C, 2) = (S1, S2) of each (n, c) row of HW floats; one work-group a row. */
__kernel void gn_bwd_partials(__global const float *x, int xo, __global const float *coef, int co,
                              __global const float *dy, int dyo, __global float *part, int po, int HW,
                              int act, __local float2 *lpart)
{
    int row = get_group_id(0);
    size_t base = (size_t)row * HW;
    float2 r = gn_row_sums(x + xo + base, dy + dyo + base, NULL, HW, vload4(0, coef + co + 4 * (size_t)row),
                           act, lpart);
    if (get_local_id(0) == 0) vstore2(r, 0, part + po + 2 * (size_t)row);
}

/* The partials and dx of one group in one work-group: each row's (S1, S2)
 * into part (for gn_bwd_affine, which runs after) and dv into dx, then dx
 * from dv and x, which the first pass left in a CPU core's cache (cpg HW
 * floats each: 6 KB at 2 x 28 x 28): one exp per element instead of two,
 * and x and dy read from memory once. The same sums in the same order as
 * gn_bwd_partials and the former gn_bwd_x kernel: the same results. With
 * has_acc, dx = acc + that (another gradient of x, summed here instead of
 * by a node of its own: the sum's operands in its order). May run in place
 * (dx == dy: each element's dy is read before its dv is written; acc is
 * not dy). */
__kernel void gn_bwd_fused(__global const float *dy, int dyo, __global const float *x, int xo,
                           __global const float *coef, int co, __global float *part, int po,
                           __global const float *acc, int acco, __global float *dx, int dxo, int HW, int cpg,
                           int act, int has_acc, __local float2 *lpart)
{
    int grp = get_group_id(0), l = get_local_id(0), ls = get_local_size(0);
    int r0 = grp * cpg, h8 = HW & ~7;
    float sa1 = 0.0f, sa2 = 0.0f;
    for (int r = r0; r < r0 + cpg; r++) {
        float4 k = vload4(0, coef + co + 4 * (size_t)r); /* a, beta, mean, rstd */
        size_t base = (size_t)r * HW;
        float2 sr = gn_row_sums(x + xo + base, dy + dyo + base, dx + dxo + base, HW, k, act, lpart);
        if (l == 0) vstore2(sr, 0, part + po + 2 * (size_t)r);
        sa1 += k.x * sr.x;
        sa2 += k.x * sr.y;
    }
    /* each work-item reads back only its own dv, but without this barrier
     * PoCL 3.1 corrupted the heap at 64 work-items per group (Oclgrind:
     * no error); uniform, and free at one work-item */
    barrier(CLK_GLOBAL_MEM_FENCE);
    float inv = 1.0f / (float)(cpg * HW);
    for (int r = r0; r < r0 + cpg; r++) {
        float4 k = vload4(0, coef + co + 4 * (size_t)r);
        float k1 = sa1 * inv, k2 = sa2 * inv * k.w * k.w;
        size_t base = (size_t)r * HW;
        __global const float *xp = x + xo + base, *ap = acc + acco + base;
        __global float *op = dx + dxo + base;
        for (int j = 8 * l; j < h8; j += 8 * ls) {
            float8 xv = vload8(0, xp + j), d = vload8(0, op + j);
            float8 g = k.x * d - k1 - (xv - k.z) * k2;
            vstore8(has_acc ? vload8(0, ap + j) + g : g, 0, op + j);
        }
        for (int j = h8 + l; j < HW; j += ls) {
            float xv = xp[j], d = op[j], g = k.x * d - k1 - (xv - k.z) * k2;
            op[j] = has_acc ? ap[j] + g : g;
        }
    }
}

/* out[c] = dgamma[c] = sum_n rstd S2 (with_xhat) or dbeta[c] = sum_n S1, items c. */
__kernel void gn_bwd_affine(__global const float *part, int po, __global const float *coef, int co,
                            __global float *out, int oo, int N, int C, int with_xhat)
{
    FOR_ITEMS(c, C)
    {
        float acc = 0.0f;
        for (int b = 0; b < N; b++) {
            size_t row = (size_t)b * C + c;
            acc += with_xhat ? coef[co + 4 * row + 3] * part[po + 2 * row + 1] : part[po + 2 * row];
        }
        out[oo + c] = acc;
    }
}
