/* Convolution kernels (driven by engine/src/ops/conv.c), and a bias helper
 * for the linear layer. Every buffer argument is followed by its offset in
 * floats. All GEMMs use the same register tile: 6 rows x 16 columns per
 * work-item, 12 float8 accumulators (AVX2: 16 registers), local size 1.
 *
 * Implicit path (stride 1; 3x3 stride 2 for the forward and the weight
 * gradient): pad_planes, then conv_s1 (forward and dx) and conv_dw_s1
 * (weight gradient) read the padded planes (their phases for stride 2)
 * directly.
 * im2col path (any stride): pack builds the GEMM operands (doing the
 * im2col), gemm.cl's gemm_packed_ab multiplies them, col2im folds dx back.
 *
 * pack's sources: a chunk of B samples is seen as matrices over columns
 * j = b*P + p (P = Ho*Wo):
 *   kind 0  dense row-major:   S(a, b) = src[a*ld + b]
 *   kind 1  (B, C, P) tensor:  S(c, j) = src[(b*C + c)*P + p]
 *   kind 2  im2col of x:       S(r, j) = x[b, ci, oy*s - pad + ky, ox*s - pad + kx]
 *                              with r = (ci*K + ky)*K + kx (0 outside the image)
 *   kind 3  (B, C, Ho, Wo) tensor over rows padded to ld: S(c, (b*Ho + oy)*ld + ox)
 *                              = src[b, c, oy, ox], 0 for ox >= Wo
 *   kind 4  weight (Co, C, K, K) flipped and transposed:
 *                              S(c, (co*K + ky)*K + kx) = w[co, c, K-1-ky, K-1-kx]
 * GEMM operands are packed in panels: A (M, K) as [M/6][K][6], B (K, N) as
 * [N/16][K][16], zero-padded, so the GEMM reads both sequentially. */

/* The 1-D kernels (pack, pad_planes, col2im, bias_fill) are launched by
 * cld__launch1d over n items: pad_planes, col2im and bias_fill for any
 * geometry, walked with FOR_ITEMS (cl/prelude.cl); pack one work-item per
 * item (reqd_work_group_size). */

/* dst[((u/R)*L + v)*R + u%R] = trans ? S(v, u) : S(u, v) for u < U (else 0),
 * v < L. One work-item per (u/R, v) writes R consecutive floats; the
 * coordinates of S are stepped along the R lanes, not divided out per
 * element. 1-D launch over ceil(U/R)*L. */
__attribute__((always_inline)) inline void pack_item(int i, __global float *dst, int dsto,
                                                     __global const float *src, int so, int kind, int trans,
                                                     int R, int U, int L, int ld, int C, int P, int H, int W,
                                                     int K, int stride, int pad, int Wo)
{
    int up = i / L, v = i - up * L;
    int u0 = up * R, n = min(R, U - u0);
    __global float *d = dst + dsto + i * R;
    for (int l = n; l < R; l++) d[l] = 0.0f;
    if (kind == 0) {
        int base = so + (trans ? v * ld + u0 : u0 * ld + v), step = trans ? 1 : ld;
        for (int l = 0; l < n; l++) d[l] = src[base + l * step];
        return;
    }
    if (kind == 3) { /* (B, C, Ho, Wo) with rows padded to ld: S(c, j), j = (b*Ho + oy)*ld + ox */
        int row = v / ld, ox = v - (v / ld) * ld;
        int Ho = P / Wo, b = row / Ho, oy = row - (row / Ho) * Ho;
        int base = so + (b * C + u0) * P + oy * Wo + ox;
        for (int l = 0; l < n; l++) d[l] = ox < Wo ? src[base + l * P] : 0.0f;
        return;
    }
    if (kind == 4) { /* weight (Co, C, K, K) flipped and transposed: S(c, (co*K + ky)*K + kx) */
        int kx = v % K, ky = (v / K) % K, co = v / (K * K);
        int base = so + ((co * C + u0) * K + (K - 1 - ky)) * K + (K - 1 - kx);
        for (int l = 0; l < n; l++) d[l] = src[base + l * K * K];
        return;
    }
    /* column j of the chunk: sample b, position p = (oy, ox) */
    int j = trans ? u0 : v;
    int b = j / P, p = j - b * P;
    if (kind == 1) {
        if (!trans) { /* rows c = u0 .. u0+n-1 of column j */
            int base = so + (b * C + u0) * P + p;
            for (int l = 0; l < n; l++) d[l] = src[base + l * P];
        } else { /* row c = v, columns j .. j+n-1 */
            for (int l = 0; l < n; l++) {
                d[l] = src[so + (b * C + v) * P + p];
                if (++p == P) {
                    p = 0;
                    b++;
                }
            }
        }
        return;
    }
    /* im2col: row r = (ci*K + ky)*K + kx */
    int r = trans ? v : u0;
    int oy = p / Wo, ox = p - (p / Wo) * Wo;
    int kx = r % K, ky = (r / K) % K, ci = r / (K * K);
    int Ho = P / Wo;
    for (int l = 0; l < n; l++) {
        int iy = oy * stride - pad + ky, ix = ox * stride - pad + kx;
        float val = 0.0f;
        if (iy >= 0 && iy < H && ix >= 0 && ix < W) val = src[so + ((b * C + ci) * H + iy) * W + ix];
        d[l] = val;
        if (trans) { /* next column j */
            if (++ox == Wo) {
                ox = 0;
                if (++oy == Ho) {
                    oy = 0;
                    b++;
                }
            }
        } else if (++kx == K) { /* next row r */
            kx = 0;
            if (++ky == K) {
                ky = 0;
                ci++;
            }
        }
    }
}

/* With reqd_work_group_size, cld__launch1d runs one work-item per item, in
 * groups of 64 on every device: on CPUs PoCL vectorizes pack_item's gathers
 * across the work-items of a group (a loop over items, or a call left out of
 * line, would stop that: 1.3x slower). */
__kernel __attribute__((reqd_work_group_size(64, 1, 1))) void
pack(__global float *dst, int dsto, __global const float *src, int so, int kind, int trans, int R, int U,
     int L, int ld, int C, int P, int H, int W, int K, int stride, int pad, int Wo)
{
    int i = CLD_ITEM; /* cld__launch_items */
    if (i < (U + R - 1) / R * L)
        pack_item(i, dst, dsto, src, so, kind, trans, R, U, L, ld, C, P, H, W, K, stride, pad, Wo);
}

/* The im2col path's product runs on gemm.cl's gemm_packed_ab (same 6 x 16
 * register tile, same panels, the conv's (B, M, P) output and bias through
 * its store_tile_seg): one kernel fewer to compile. conv_s1 below shares
 * its inner step: */
#define GEMM_FMA(i)                             \
    {                                           \
        float a_ = pa[i];                       \
        c##i##0 = fma((float8)a_, b0, c##i##0); \
        c##i##1 = fma((float8)a_, b1, c##i##1); \
    }

#define CONV_STORE(i)                                             \
    if (m0 + i < M) {                                             \
        int m = m0 + i;                                           \
        float bv = has_bias ? bias[biaso + m] : 0.0f;             \
        float8 v0 = c##i##0 + bv, v1 = c##i##1 + bv;              \
        __global float *ym = yb + m * P;                          \
        if (fast) {                                               \
            vstore8(v0, 0, ym + oy0 * Wo + ox0);                  \
            vstore8(v1, 1, ym + oy0 * Wo + ox0);                  \
        } else {                                                  \
            float t_[16];                                         \
            vstore8(v0, 0, t_);                                   \
            vstore8(v1, 1, t_);                                   \
            int oy = oy0, ox = ox0;                               \
            for (int j = 0; j < 16; j++) {                        \
                if (oy < Ho && ox < Wo) ym[oy * Wo + ox] = t_[j]; \
                if (++ox == Wp) {                                 \
                    ox = 0;                                       \
                    oy++;                                         \
                }                                                 \
            }                                                     \
        }                                                         \
    }
/* xp (BC, S*S, Hp, Wp) = x (BC, H, W) shifted by (pad, pad) into zero planes
 * and, for stride S = 2, split into its S*S phases: plane (bc, a*S + b) row
 * yy, column xx holds the padded x at (S*yy + a, S*xx + b), so that a
 * stride-S convolution reads each tap's outputs as contiguous runs (conv_s1,
 * conv_dw_s1). Hp >= (H + 2*pad)/S, Wp >= (W + 2*pad)/S; followed by `slack`
 * zeros. One work-item per row yy of the S*S phases of a plane, plus one for
 * the slack: 1-D launch over BC*Hp + 1. */
inline void pad_row(int t, __global const float *x, int xo, __global float *xp, int xpo, int BC, int H, int W,
                    int pad, int S, int Hp, int Wp, int slack)
{
    if (t == BC * Hp) {
        __global float *d = xp + xpo + (size_t)BC * S * S * Hp * Wp;
        for (int i = 0; i < slack; i++) d[i] = 0.0f;
        return;
    }
    int yy = t % Hp, bc = t / Hp;
    for (int ph = 0; ph < S * S; ph++) {
        __global float *d = xp + xpo + (((size_t)bc * S * S + ph) * Hp + yy) * Wp;
        int iy = S * yy + ph / S - pad;
        if (iy < 0 || iy >= H) {
            for (int i = 0; i < Wp; i++) d[i] = 0.0f;
            continue;
        }
        const __global float *s = x + xo + (bc * H + iy) * W;
        if (S == 1) { /* what the strided copy below does for S = 1, as a copy PoCL vectorizes */
            for (int i = 0; i < pad; i++) d[i] = 0.0f;
            for (int i = 0; i < W; i++) d[pad + i] = s[i];
            for (int i = pad + W; i < Wp; i++) d[i] = 0.0f;
            continue;
        }
        /* column i reads x column S*i + o: zeros where that is outside, the
         * rest one strided copy without a test */
        int o = ph % S - pad, i0 = o >= 0 ? 0 : (-o + S - 1) / S, i1 = min(Wp, (W - o + S - 1) / S);
        for (int i = 0; i < i0; i++) d[i] = 0.0f;
        const __global float *so = s + o;
        for (int i = i0; i < i1; i++) d[i] = so[S * i];
        for (int i = max(i1, i0); i < Wp; i++) d[i] = 0.0f;
    }
}

__kernel void pad_planes(__global const float *x, int xo, __global float *xp, int xpo, int BC, int H, int W,
                         int pad, int S, int Hp, int Wp, int slack)
{
    FOR_ITEMS(t, BC * Hp + 1) pad_row(t, x, xo, xp, xpo, BC, H, W, pad, S, Hp, Wp, slack);
}

/* Convolution with stride S (1 or 2) as an implicit GEMM over padded planes
 * (pad_planes): for sample b = get_global_id(2), y[b, m, oy, ox] =
 * sum_{c,ky,kx} A(m, (c*K + ky)*K + kx) * xp[b, c, (ky%S)*S + kx%S, oy +
 * ky/S, ox + kx/S] (+ bias[m]). A is packed like gemm_packed_ab's A. Output
 * positions are enumerated over the planes' width, j = oy*Wp + ox, so for
 * each tap the 16 inputs of a tile are contiguous in xp; columns ox >= Wo
 * are computed and dropped. 3-D launch (ceil(M/6), ceil(Ho*Wp/16), B). */
__kernel void conv_s1(int M, int C, int K, int S, __global const float *A, int ao, __global const float *xp,
                      int xpo, int Hp, int Wp, __global float *y, int yo, int Ho, int Wo,
                      __global const float *bias, int biaso, int has_bias)
{
    int mb = get_global_id(0), nb = get_global_id(1), b = get_global_id(2);
    int m0 = mb * 6, n0 = nb * 16;
    int HpWp = Hp * Wp;
    if (m0 >= M || n0 >= Ho * Wp) return;
    const __global float *pa = A + ao + mb * (C * K * K) * 6;
    const __global float *xb = xp + xpo + b * C * S * S * HpWp + n0;
    float8 c00 = 0.0f, c01 = 0.0f, c10 = 0.0f, c11 = 0.0f, c20 = 0.0f, c21 = 0.0f;
    float8 c30 = 0.0f, c31 = 0.0f, c40 = 0.0f, c41 = 0.0f, c50 = 0.0f, c51 = 0.0f;
#define CONV_TAPS(KS)                                                                            \
    for (int c = 0; c < C; c++) {                                                                \
        for (int ky = 0; ky < KS; ky++) {                                                        \
            const __global float *pb = xb + c * HpWp + ky * Wp;                                  \
            for (int kx = 0; kx < KS; kx++) {                                                    \
                float8 b0 = vload8(0, pb + kx), b1 = vload8(0, pb + kx + 8);                     \
                GEMM_FMA(0) GEMM_FMA(1) GEMM_FMA(2) GEMM_FMA(3) GEMM_FMA(4) GEMM_FMA(5) pa += 6; \
            }                                                                                    \
        }                                                                                        \
    }
    /* constant trip counts for the common kernel sizes let the compiler unroll */
    if (S == 2) {
        for (int c = 0; c < C; c++)
            for (int ky = 0; ky < K; ky++)
                for (int kx = 0; kx < K; kx++) {
                    const __global float *pb =
                        xb + ((c * 4 + (ky & 1) * 2 + (kx & 1)) * Hp + (ky >> 1)) * Wp + (kx >> 1);
                    float8 b0 = vload8(0, pb), b1 = vload8(0, pb + 8);
                    GEMM_FMA(0) GEMM_FMA(1) GEMM_FMA(2) GEMM_FMA(3) GEMM_FMA(4) GEMM_FMA(5) pa += 6;
                }
    } else if (K == 3)
        CONV_TAPS(3)
    else if (K == 1)
        CONV_TAPS(1)
    else
        CONV_TAPS(K)
    int P = Ho * Wo;
    int oy0 = n0 / Wp, ox0 = n0 - oy0 * Wp;
    int fast = ox0 + 16 <= Wo;
    __global float *yb = y + yo + b * M * P;
    CONV_STORE(0) CONV_STORE(1) CONV_STORE(2) CONV_STORE(3) CONV_STORE(4) CONV_STORE(5)
}

/* Weight gradient of a stride-S convolution over padded planes (S 1 or 2,
 * pad_planes' phases), as the transposed GEMM dW^T (CKK, Co) = X (CKK, J) D
 * (J, Co): rows r = (c*K + ky)*K + kx of X are the shifted planes xp[b, c,
 * (ky%S)*S + kx%S, ky/S + ., kx/S + .] read over the output positions
 * j = oy*Wp + ox of each sample (6 streams per
 * work-item); D is the output gradient packed [Co/16][nb*Ho*Wp][16] with
 * zeros at ox >= Wo. dw (Co, CKK) = result (+ dw if beta).
 * 2-D launch (ceil(CKK/6), ceil(Co/16)), local 1x1. */
#define DW_FMA(i)                               \
    {                                           \
        float a_ = p##i[j];                     \
        c##i##0 = fma((float8)a_, b0, c##i##0); \
        c##i##1 = fma((float8)a_, b1, c##i##1); \
    }
#define DW_OFF(i)                                                                 \
    int rr##i = min(r0 + i, CKK - 1), ky##i = (rr##i / K) % K, kx##i = rr##i % K; \
    int o##i = ((rr##i / KK) * S * S + (ky##i % S) * S + kx##i % S) * HpWp + (ky##i / S) * Wp + kx##i / S;
#define DW_STORE(i)                                                  \
    if (r0 + i < CKK) {                                              \
        float t_[16];                                                \
        vstore8(c##i##0, 0, t_);                                     \
        vstore8(c##i##1, 1, t_);                                     \
        for (int l = 0; l < 16 && n0 + l < Co; l++) {                \
            __global float *pd = dw + dwo + (n0 + l) * CKK + r0 + i; \
            *pd = beta ? *pd + t_[l] : t_[l];                        \
        }                                                            \
    }
__kernel void conv_dw_s1(int Co, int C, int K, int S, __global const float *xp, int xpo, int Hp, int Wp,
                         int Ho, int nb, __global const float *D, int dpo, __global float *dw, int dwo,
                         int beta)
{
    int rb = get_global_id(0), cb = get_global_id(1);
    int KK = K * K, CKK = C * KK, HpWp = Hp * Wp, J = Ho * Wp;
    int r0 = rb * 6, n0 = cb * 16;
    if (r0 >= CKK || n0 >= Co) return;
    DW_OFF(0)
    DW_OFF(1) DW_OFF(2) DW_OFF(3) DW_OFF(4) DW_OFF(5) const __global float *pb = D + dpo + cb * (nb * J) * 16;
    float8 c00 = 0.0f, c01 = 0.0f, c10 = 0.0f, c11 = 0.0f, c20 = 0.0f, c21 = 0.0f;
    float8 c30 = 0.0f, c31 = 0.0f, c40 = 0.0f, c41 = 0.0f, c50 = 0.0f, c51 = 0.0f;
    for (int b = 0; b < nb; b++) {
        const __global float *xb = xp + xpo + b * C * S * S * HpWp;
        const __global float *p0 = xb + o0, *p1 = xb + o1, *p2 = xb + o2;
        const __global float *p3 = xb + o3, *p4 = xb + o4, *p5 = xb + o5;
        for (int j = 0; j < J; j++) {
            float8 b0 = vload8(0, pb), b1 = vload8(1, pb);
            DW_FMA(0) DW_FMA(1) DW_FMA(2) DW_FMA(3) DW_FMA(4) DW_FMA(5) pb += 16;
        }
    }
    DW_STORE(0) DW_STORE(1) DW_STORE(2) DW_STORE(3) DW_STORE(4) DW_STORE(5)
}

/* Adjoint of im2col: x[b, c, iy, ix] = sum of the entries of col (C*K*K, B*P)
 * (row-major) that im2col read from it. One work-item per row (b, c, iy) of
 * x: it zeroes the row and adds, tap by tap, the col rows that land on it
 * (no atomics: each row has one writer). 1-D launch over B*C*H. */
inline void col2im_row(int t, __global const float *col, int colo, __global float *x, int xo, int C, int H,
                       int W, int K, int stride, int pad, int Ho, int Wo, int B)
{
    int iy = t % H, bc = t / H;
    int c = bc % C, b = bc / C;
    int P = Ho * Wo, BP = B * P;
    __global float *d = x + xo + t * W;
    for (int ix = 0; ix < W; ix++) d[ix] = 0.0f;
    for (int ky = 0; ky < K; ky++) {
        int ty = iy + pad - ky;
        if (ty < 0) break; /* decreases with ky */
        int oy = ty / stride;
        if (oy * stride != ty || oy >= Ho) continue;
        for (int kx = 0; kx < K; kx++) {
            const __global float *s = col + colo + ((c * K + ky) * K + kx) * BP + b * P + oy * Wo;
            /* ix = ox*stride - pad + kx for ox in [0, Wo) with 0 <= ix < W */
            int ox = kx < pad ? (pad - kx + stride - 1) / stride : 0;
            for (int ix = ox * stride - pad + kx; ox < Wo && ix < W; ox++, ix += stride) d[ix] += s[ox];
        }
    }
}

__kernel void col2im(__global const float *col, int colo, __global float *x, int xo, int C, int H, int W,
                     int K, int stride, int pad, int Ho, int Wo, int B)
{
    FOR_ITEMS(t, B * C * H) col2im_row(t, col, colo, x, xo, C, H, W, K, stride, pad, Ho, Wo, B);
}

/* y[i] = bias[(i / inner) % C]: a bias broadcast, before a GEMM with beta = 1. */
__kernel void bias_fill(__global float *y, int yo, __global const float *bias, int bo, int n, int inner,
                        int C)
{
    FOR_ITEMS(i, n) y[yo + i] = bias[bo + (i / inner) % C];
}
