/* Winograd F(4x4, 3x3) for 3x3 stride-1 pad-1 convolutions (Lavin & Gray,
 * "Fast Algorithms for Convolutional Neural Networks", 2015): each 4x4
 * output tile is A^T [ (G g G^T) .* (B^T d B) ] A over a 6x6 input tile d,
 * so the 36 elementwise products become 36 independent GEMMs
 *   Mo[e] (M, T) = U[e] (M, C) V[e] (C, T),   e = 0 .. 35,
 * T = tiles of a chunk of samples. That is 36*M*C*T multiply-adds for
 * 16*T outputs against 9*16*M*C*T for the direct convolution: 4x fewer.
 * Transforms (interpolation points 0, 1, -1, 2, -2, inf):
 *   B^T = | 4  0 -5  0  1  0 |   G = | 1/4     0     0 |   A^T = | 1  1  1  1  1  0 |
 *         | 0 -4 -4  1  1  0 |       | -1/6 -1/6 -1/6 |         | 0  1 -1  2 -2  0 |
 *         | 0  4 -4 -1  1  0 |       | -1/6  1/6 -1/6 |         | 0  1  1  4  4  0 |
 *         | 0 -2 -1  2  1  0 |       | 1/24 1/12  1/6 |         | 0  1 -1  8 -8  1 |
 *         | 0  2 -1 -2  1  0 |       | 1/24 -1/12 1/6 |
 *         | 0  4  0 -5  0  1 |       | 0       0     1 |
 * Layouts: U packed as the A operand of gemm_packed_ab, [e][M/6][C][6] (row-major
 * [e][M][C] when the products go to cld__gemm_batched, on GPUs); V
 * row-major [e][C][ldv] (ldv >= Tp = T rounded up to 16, not a multiple of
 * 64 so that the GEMM's K rows do not alias in L1); Mo [e][M][Tp]. The
 * matrices of consecutive e lie eu, ev, em floats apart, strides chosen so
 * that the 36 streams of a transform fall into different L1 sets (a stride
 * that is a multiple of 4 KiB maps all 36 to one set; the change measured
 * no faster within this machine's noise, see bench/NOTES.md, but costs
 * nothing). */

/* the 1-D transforms, in place on 6 (or 3 -> 6, 6 -> 4) values */
#define WINO_BT(d0, d1, d2, d3, d4, d5, o)       \
    {                                            \
        o[0] = 4.0f * d0 - 5.0f * d2 + d4;       \
        o[1] = -4.0f * d1 - 4.0f * d2 + d3 + d4; \
        o[2] = 4.0f * d1 - 4.0f * d2 - d3 + d4;  \
        o[3] = -2.0f * d1 - d2 + 2.0f * d3 + d4; \
        o[4] = 2.0f * d1 - d2 - 2.0f * d3 + d4;  \
        o[5] = 4.0f * d1 - 5.0f * d3 + d5;       \
    }
#define WINO_G(g0, g1, g2, o)                                                  \
    {                                                                          \
        o[0] = 0.25f * g0;                                                     \
        o[1] = -(g0 + g1 + g2) * (1.0f / 6.0f);                                \
        o[2] = -(g0 - g1 + g2) * (1.0f / 6.0f);                                \
        o[3] = g0 * (1.0f / 24.0f) + g1 * (1.0f / 12.0f) + g2 * (1.0f / 6.0f); \
        o[4] = g0 * (1.0f / 24.0f) - g1 * (1.0f / 12.0f) + g2 * (1.0f / 6.0f); \
        o[5] = g2;                                                             \
    }
#define WINO_AT(m0, m1, m2, m3, m4, m5, o)     \
    {                                          \
        float8 s12_ = m1 + m2, d12_ = m1 - m2; \
        float8 s34_ = m3 + m4, d34_ = m3 - m4; \
        o[0] = m0 + s12_ + s34_;               \
        o[1] = d12_ + 2.0f * d34_;             \
        o[2] = s12_ + 4.0f * s34_;             \
        o[3] = d12_ + 8.0f * d34_ + m5;        \
    }

/* U[e] (M, C) = G g G^T for every (m, c): g = w[m, c] (Co = M, Ci = C), or
 * with flip = 1 the kernel of the input gradient, g(ky, kx) = w[c, m, 2-ky,
 * 2-kx] (w is (Co = C, Ci = M)). Items (m, c), c fastest, covered as in
 * wino_input below. packed: for wino_gemm, rows m >= M (up to a multiple of
 * 6) zero; else row-major (M, C) for a BLAS. Scalar
 * code, fully unrolled: PoCL's vectorization across work-items turned the
 * stride-9 weight loads into gathers (5-6 ms for 256 x 256 channels). */
inline void wino_weight_item(int i, __global const float *w, int wo, __global float *u, int uo, int M, int C,
                             int flip, int eu, int packed)
{
    int m = i / C, c = i - (i / C) * C;
    float g[3][3];
#pragma unroll
    for (int ky = 0; ky < 3; ky++)
#pragma unroll
        for (int kx = 0; kx < 3; kx++) {
            float v = 0.0f;
            if (m < M)
                v = flip ? w[wo + ((c * M + m) * 3 + 2 - ky) * 3 + 2 - kx]
                         : w[wo + ((m * C + c) * 3 + ky) * 3 + kx];
            g[ky][kx] = v;
        }
    float t[6][3]; /* G g */
#pragma unroll
    for (int kx = 0; kx < 3; kx++) {
        float o[6];
        WINO_G(g[0][kx], g[1][kx], g[2][kx], o);
#pragma unroll
        for (int a = 0; a < 6; a++) t[a][kx] = o[a];
    }
    __global float *d = u + uo + (packed ? ((m / 6) * C + c) * 6 + m % 6 : m * C + c);
#pragma unroll
    for (int a = 0; a < 6; a++) {
        float o[6]; /* (G g) G^T, row a */
        WINO_G(t[a][0], t[a][1], t[a][2], o);
#pragma unroll
        for (int b = 0; b < 6; b++) d[(a * 6 + b) * eu] = o[b];
    }
}

__kernel void wino_weight(__global const float *w, int wo, __global float *u, int uo, int M, int C, int flip,
                          int eu, int packed)
{
    int n = (packed ? (M + 5) / 6 * 6 : M) * C;
    FOR_ITEMS(i, n) wino_weight_item(i, w, wo, u, uo, M, C, flip, eu, packed);
}

/* Tiles. Tile (b, ty, tx) covers output rows 4ty .. 4ty+3 and columns
 * 4tx .. 4tx+3 of sample b; its 6x6 input tile is rows 4ty-1 .. 4ty+4 and
 * columns 4tx-1 .. 4tx+4 of x (nb, C, H, W), read in place: positions
 * outside the plane (the conv's zero padding, and tiles past the edge) read
 * as 0. Its column in V and Mo is t = (b*TH + ty)*TWp + tx: rows of tiles
 * are padded to TWp tiles, the next power of two for TW <= 8, else a
 * multiple of 8, so that a group of 8 columns t0 .. t0+7 (t0 % 8 == 0) is
 * either 8 tiles of one row or 8/TWp whole rows. One work-item handles such
 * a group for one channel, a tile per float8 lane, and stores each of its 36
 * results with one vstore8; lanes of padding tiles (tx >= TW, or rows past
 * the last) compute values in columns that the output transform skips.
 * Items are covered with FOR_ITEMS (cl/prelude.cl), channel slowest, so each
 * of the 36 streams of V is written in order. (Reading x in place replaced a
 * copy into zero-padded planes before this kernel: bench/NOTES.md, "Tenth
 * session".) */

/* Columns o .. o+7 of a row segment q with n columns (those at n and past
 * it read as 0; o >= 0) */
inline float8 wino_load8(const __global float *q, int n, int o)
{
    if (o + 8 <= n) return vload8(0, q + o);
    float t[8];
#pragma unroll
    for (int j = 0; j < 8; j++) t[j] = o + j < n ? q[o + j] : 0.0f;
    return vload8(0, t);
}

/* Lanes 4i + j of four row segments of 8 columns each, j = 0 .. 3: the
 * columns j of 8 tiles laid side by side, a tile per lane */
#define WINO_SPLIT4(a0, a1, a2, a3, y0, y1, y2, y3)    \
    {                                                  \
        y0 = (float8)(a0.s04, a1.s04, a2.s04, a3.s04); \
        y1 = (float8)(a0.s15, a1.s15, a2.s15, a3.s15); \
        y2 = (float8)(a0.s26, a1.s26, a2.s26, a3.s26); \
        y3 = (float8)(a0.s37, a1.s37, a2.s37, a3.s37); \
    }

/* Groups of 8 tiles that are 8/TWp whole rows of tiles (TWp 4 or 2, planes
 * at most 16 wide): columns 0 .. 15 (lo, hi) or 0 .. 7 (lo) of row y[h] of
 * plane ph[h] for the group's rows h, 0 where outside the plane. */
inline void wino_rows(const __global float *const *ph, const int *y, int TWp, int H, int W, float8 *lo,
                      float8 *hi)
{
#pragma unroll
    for (int h = 0; h < 4; h++) {
        lo[h] = 0.0f;
        hi[h] = 0.0f;
        if (h < 8 / TWp && y[h] >= 0 && y[h] < H) {
            const __global float *q = ph[h] + y[h] * W;
            lo[h] = wino_load8(q, W, 0);
            if (TWp == 4) hi[h] = wino_load8(q, W, 8);
        }
    }
}

/* V[e] (C, ldv) = B^T d B for channel c = i / NI and the group of 8 tiles
 * t0 = 8 * (i % NI), NI = Tp / 8 groups per channel. Input row k of the
 * group's tiles, d0 .. d5 (input columns 0 .. 5 of each tile, a tile per
 * lane), is transformed along x into s[k]. */
inline void wino_input_rows(__global const float *x, int xo, int c, int t0, int C, int NB, int H, int W,
                            int TH, int TWp, float8 s[6][6])
{
    int rows = NB * TH;
    if (TWp >= 8) { /* 8 tiles of one row: shuffles of contiguous loads */
        int gr = min(t0 / TWp, rows - 1), tx0 = t0 - (t0 / TWp) * TWp;
        int b = gr / TH, ty = gr - (gr / TH) * TH;
        /* the tiles' input columns 4tx0-1 .. 4tx0+32: b0 .. b3 and b4 from
         * column cb = 4tx0, lf the one before it */
        int cb = 4 * tx0, n = W - cb;
        const __global float *p = x + xo + (size_t)(b * C + c) * H * W + cb;
#pragma unroll
        for (int k = 0; k < 6; k++) {
            int y = 4 * ty - 1 + k;
            float8 d0 = 0.0f, d1 = 0.0f, d2 = 0.0f, d3 = 0.0f, d4 = 0.0f, d5 = 0.0f;
            if (y >= 0 && y < H) {
                const __global float *q = p + y * W;
                float8 b0, b1, b2, b3;
                float b4, lf = cb > 0 ? q[-1] : 0.0f;
                if (n >= 33) {
                    b0 = vload8(0, q), b1 = vload8(1, q), b2 = vload8(2, q), b3 = vload8(3, q);
                    b4 = q[32];
                } else {
                    b0 = wino_load8(q, n, 0), b1 = wino_load8(q, n, 8), b2 = wino_load8(q, n, 16);
                    b3 = wino_load8(q, n, 24);
                    b4 = 0.0f;
                }
                d0 = (float8)(lf, b0.s37, b1.s37, b2.s37, b3.s3);
                WINO_SPLIT4(b0, b1, b2, b3, d1, d2, d3, d4)
                d5 = (float8)(b0.s4, b1.s04, b2.s04, b3.s04, b4);
            }
            WINO_BT(d0, d1, d2, d3, d4, d5, s[k]);
        }
    } else if (TWp == 4 || TWp == 2) { /* 8/TWp whole rows of tiles (W <= 16): segments from column 0 */
        const __global float *ph[4];   /* each row's plane */
        int yh[4];                     /* and its first input row */
#pragma unroll
        for (int h = 0; h < 4; h++) {
            int gr = min(t0 / TWp + h, rows - 1);
            int b = gr / TH, ty = gr - (gr / TH) * TH;
            ph[h] = x + xo + (size_t)(b * C + c) * H * W;
            yh[h] = 4 * ty - 1;
        }
#pragma unroll
        for (int k = 0; k < 6; k++) {
            /* input columns -1 .. 16 of each row: column -1 and those past
             * W (at most 16) are 0 */
            float8 lo[4], hi[4], d0, d1, d2, d3, d4, d5;
            int y[4] = {yh[0] + k, yh[1] + k, yh[2] + k, yh[3] + k};
            wino_rows(ph, y, TWp, H, W, lo, hi);
            if (TWp == 4) {
                d0 = (float8)(0.0f, lo[0].s37, hi[0].s3, 0.0f, lo[1].s37, hi[1].s3);
                WINO_SPLIT4(lo[0], hi[0], lo[1], hi[1], d1, d2, d3, d4)
                d5 = (float8)(lo[0].s4, hi[0].s04, 0.0f, lo[1].s4, hi[1].s04, 0.0f);
            } else {
                d0 = (float8)(0.0f, lo[0].s3, 0.0f, lo[1].s3, 0.0f, lo[2].s3, 0.0f, lo[3].s3);
                WINO_SPLIT4(lo[0], lo[1], lo[2], lo[3], d1, d2, d3, d4)
                d5 = (float8)(lo[0].s4, 0.0f, lo[1].s4, 0.0f, lo[2].s4, 0.0f, lo[3].s4, 0.0f);
            }
            WINO_BT(d0, d1, d2, d3, d4, d5, s[k]);
        }
    } else { /* TWp == 1: 8 rows of one tile, per-lane loads from clamped positions, masked */
        const __global float *pl[8]; /* each lane's plane */
        int yl[8], xl[8][6];         /* its tile's first input row; its input columns, clamped */
        float cm[6][8];              /* 1 where input column j of lane l is inside the plane */
#pragma unroll
        for (int l = 0; l < 8; l++) {
            int t = t0 + l, gr = min(t / TWp, rows - 1), tx = t - (t / TWp) * TWp;
            int b = gr / TH, ty = gr - (gr / TH) * TH;
            pl[l] = x + xo + (size_t)(b * C + c) * H * W;
            yl[l] = 4 * ty - 1;
#pragma unroll
            for (int j = 0; j < 6; j++) {
                int col = 4 * tx - 1 + j;
                xl[l][j] = clamp(col, 0, W - 1);
                cm[j][l] = col >= 0 && col < W ? 1.0f : 0.0f;
            }
        }
#pragma unroll
        for (int k = 0; k < 6; k++) {
            float g[6][8], rm[8];
#pragma unroll
            for (int l = 0; l < 8; l++) {
                int y = yl[l] + k;
                rm[l] = y >= 0 && y < H ? 1.0f : 0.0f;
                const __global float *q = pl[l] + clamp(y, 0, H - 1) * W;
#pragma unroll
                for (int j = 0; j < 6; j++) g[j][l] = q[xl[l][j]];
            }
            float8 r = vload8(0, rm);
            WINO_BT(vload8(0, g[0]) * vload8(0, cm[0]), vload8(0, g[1]) * vload8(0, cm[1]),
                    vload8(0, g[2]) * vload8(0, cm[2]), vload8(0, g[3]) * vload8(0, cm[3]),
                    vload8(0, g[4]) * vload8(0, cm[4]), vload8(0, g[5]) * vload8(0, cm[5]), s[k]);
#pragma unroll
            for (int j = 0; j < 6; j++) s[k][j] *= r;
        }
    }
}

inline void wino_input_item(int i, __global const float *x, int xo, __global float *v, int vo, int C, int NB,
                            int H, int W, int TH, int TWp, int Tp, int ldv, int ev)
{
    int NI = Tp / 8, c = i / NI, t0 = 8 * (i - (i / NI) * NI);
    float8 s[6][6]; /* s[k][j] = (d B)[k][j]: input row k, transformed along x */
    wino_input_rows(x, xo, c, t0, C, NB, H, W, TH, TWp, s);
    __global float *dst = v + vo + (size_t)c * ldv + t0;
#pragma unroll
    for (int j = 0; j < 6; j++) {
        float8 o[6]; /* B^T (d B), column j */
        WINO_BT(s[0][j], s[1][j], s[2][j], s[3][j], s[4][j], s[5][j], o);
#pragma unroll
        for (int a = 0; a < 6; a++) vstore8(o[a], 0, dst + (a * 6 + j) * (size_t)ev);
    }
}

/* V^T[e] (Tp, ldt) = B^T d B for tile t = i % Tp and channels c0 .. c0+7,
 * c0 = 8 * (i / Tp), a channel per float8 lane (channels past C repeat
 * the last; ldt >= C rounded up to 8): the weight gradient's B operand,
 * row-major, so its products need no transposing pack (gemm_pack_b). The
 * tile's 6x6 window is gathered from the 8 planes, positions outside the
 * plane as 0; rows of tiles past the last read the last one (their dMo is
 * 0). */
inline void wino_input_t_item(int i, __global const float *x, int xo, __global float *vt, int vto, int C,
                              int NB, int H, int W, int TH, int TWp, int Tp, int ldt, int evt)
{
    int t = i - (i / Tp) * Tp, c0 = 8 * (i / Tp);
    int gr = min(t / TWp, NB * TH - 1), tx = t - (t / TWp) * TWp;
    int b = gr / TH, ty = gr - (gr / TH) * TH;
    const __global float *pl[8];
#pragma unroll
    for (int l = 0; l < 8; l++) pl[l] = x + xo + (size_t)(b * C + min(c0 + l, C - 1)) * H * W;
    float8 s[6][6];
#pragma unroll
    for (int k = 0; k < 6; k++) {
        int y = 4 * ty - 1 + k;
        float8 g[6];
#pragma unroll
        for (int j = 0; j < 6; j++) {
            int col = 4 * tx - 1 + j, o = y * W + col;
            g[j] = y >= 0 && y < H && col >= 0 && col < W ? (float8)(pl[0][o], pl[1][o], pl[2][o], pl[3][o],
                                                                     pl[4][o], pl[5][o], pl[6][o], pl[7][o])
                                                          : (float8)(0.0f);
        }
        WINO_BT(g[0], g[1], g[2], g[3], g[4], g[5], s[k]);
    }
    __global float *dst = vt + vto + (size_t)t * ldt + c0;
#pragma unroll
    for (int j = 0; j < 6; j++) {
        float8 o[6];
        WINO_BT(s[0][j], s[1][j], s[2][j], s[3][j], s[4][j], s[5][j], o);
#pragma unroll
        for (int a = 0; a < 6; a++) vstore8(o[a], 0, dst + (a * 6 + j) * (size_t)evt);
    }
}

__kernel void wino_input_t(__global const float *x, int xo, __global float *vt, int vto, int C, int NB, int H,
                           int W, int TH, int TWp, int Tp, int ldt, int evt)
{
    FOR_ITEMS(i, Tp * ((C + 7) / 8))
    wino_input_t_item(i, x, xo, vt, vto, C, NB, H, W, TH, TWp, Tp, ldt, evt);
}

__kernel void wino_input(__global const float *x, int xo, __global float *v, int vo, int C, int NB, int H,
                         int W, int TH, int TWp, int Tp, int ldv, int ev)
{
    FOR_ITEMS(i, C * (Tp / 8))
    wino_input_item(i, x, xo, v, vo, C, NB, H, W, TH, TWp, Tp, ldv, ev);
}

/* Mo[e] (M, Tp) = U[e] V[e]: gemm_packed_ab's 6 x 16 register tile, one GEMM
 * per e = get_global_id(2); each work-item computes nt column tiles in turn
 * (its 6-row panel of U stays in L1). 3-D launch (ceil(M/6), ceil(Tp/16/nt),
 * 36), local 1x1x1. */
#define WINO_FMA(i)                             \
    {                                           \
        float a_ = pa[i];                       \
        c##i##0 = fma((float8)a_, b0, c##i##0); \
        c##i##1 = fma((float8)a_, b1, c##i##1); \
    }
#define WINO_STORE(i)                     \
    if (m0 + i < M) {                     \
        vstore8(c##i##0, 0, pm + i * Tp); \
        vstore8(c##i##1, 1, pm + i * Tp); \
    }
__kernel void wino_gemm(int M, int C, int Tp, int ldv, int eu, int ev, int em, __global const float *u,
                        int uo, __global const float *v, int vo, __global float *mo, int moo, int nt)
{
    int mb = get_global_id(0), e = get_global_id(2);
    int m0 = mb * 6;
    for (int jt = 0; jt < nt; jt++) {
        int nb = get_global_id(1) * nt + jt;
        if (nb * 16 >= Tp) break;
        const __global float *pa = u + uo + (size_t)e * eu + mb * C * 6;
        const __global float *pb = v + vo + (size_t)e * ev + nb * 16;
        float8 c00 = 0.0f, c01 = 0.0f, c10 = 0.0f, c11 = 0.0f, c20 = 0.0f, c21 = 0.0f;
        float8 c30 = 0.0f, c31 = 0.0f, c40 = 0.0f, c41 = 0.0f, c50 = 0.0f, c51 = 0.0f;
#define WINO_K1                                                                          \
    {                                                                                    \
        float8 b0 = vload8(0, pb), b1 = vload8(1, pb);                                   \
        WINO_FMA(0) WINO_FMA(1) WINO_FMA(2) WINO_FMA(3) WINO_FMA(4) WINO_FMA(5) pa += 6; \
        pb += ldv;                                                                       \
    }
        int k = 0;
        for (; k + 4 <= C; k += 4) {
            WINO_K1 WINO_K1 WINO_K1 WINO_K1
        }
        for (; k < C; k++) WINO_K1
        __global float *pm = mo + moo + (size_t)e * em + m0 * Tp + nb * 16;
        WINO_STORE(0) WINO_STORE(1) WINO_STORE(2) WINO_STORE(3) WINO_STORE(4) WINO_STORE(5)
    }
}

/* y (nb, M, H, W) = A^T Mo A (+ bias[m]) for channel m = i / NI and the
 * group of 8 tiles t0 = 8 * (i % NI), NI = Tp / 8; padding tiles skipped. */
#define WINO_ROW4(l) vstore4((float4)(o[0].s##l, o[1].s##l, o[2].s##l, o[3].s##l), l, py);
#define WINO_ROW4_IF(l) \
    if (l < nt) WINO_ROW4(l)
/* the rest of A^T Mo A from s[a][j] = (A^T Mo)[a][j] of channel m and the
 * tiles t0 .. t0+7, plus bv, stored into y */
inline void wino_output_store(float8 s[4][6], float bv, int m, int t0, __global float *y, int yo, int M,
                              int NB, int H, int W, int TH, int TW, int TWp)
{
    int rows = NB * TH;
    if (TWp >= 8) { /* 8 tiles of one row */
        int gr = t0 / TWp, tx0 = t0 - (t0 / TWp) * TWp;
        if (gr >= rows) return;
        int b = gr / TH, ty = gr - (gr / TH) * TH;
        __global float *ys = y + yo + (b * M + m) * H * W;
        int x0 = 4 * tx0, fast = x0 + 32 <= W;
#pragma unroll
        for (int a = 0; a < 4; a++) {
            if (4 * ty + a >= H) break;
            float8 o[4]; /* o[j]: output column 4*lane + j of row 4ty + a */
            WINO_AT(s[a][0], s[a][1], s[a][2], s[a][3], s[a][4], s[a][5], o);
#pragma unroll
            for (int j = 0; j < 4; j++) o[j] += bv;
            __global float *py = ys + (4 * ty + a) * W + x0;
            if (fast) {
                WINO_ROW4(0)
                WINO_ROW4(1) WINO_ROW4(2) WINO_ROW4(3) WINO_ROW4(4) WINO_ROW4(5) WINO_ROW4(6) WINO_ROW4(7)
            } else { /* whole tiles with vstore4 (lanes unrolled), then the last partial one */
                int nt = min(8, (W - x0) / 4);
                WINO_ROW4_IF(0);
                WINO_ROW4_IF(1);
                WINO_ROW4_IF(2);
                WINO_ROW4_IF(3);
                WINO_ROW4_IF(4);
                WINO_ROW4_IF(5);
                WINO_ROW4_IF(6);
                if (nt < 8 && x0 + 4 * nt < W) { /* the last, partial tile */
                    float l_[4][8];
#pragma unroll
                    for (int j = 0; j < 4; j++) vstore8(o[j], 0, l_[j]);
                    for (int xx = 4 * nt; x0 + xx < W; xx++) py[xx] = l_[xx % 4][xx / 4];
                }
            }
        }
        return;
    }
    float8 r[4][4]; /* r[a][j]: output row a, column j, a tile per lane */
#pragma unroll
    for (int a = 0; a < 4; a++) {
        WINO_AT(s[a][0], s[a][1], s[a][2], s[a][3], s[a][4], s[a][5], r[a]);
#pragma unroll
        for (int j = 0; j < 4; j++) r[a][j] += bv;
    }
    /* 8/TWp rows of TWp tiles, lanes unrolled (their components named at
     * compile time: no trip through a private array for whole tiles) */
#define WINO_LANE_OUT(l)                                                                     \
    {                                                                                        \
        int t = t0 + l, gr = t / TWp, tx = t - (t / TWp) * TWp;                              \
        if (gr < rows && tx < TW) {                                                          \
            int b = gr / TH, ty = gr - (gr / TH) * TH;                                       \
            __global float *ys = y + yo + ((b * M + m) * H + 4 * ty) * W + 4 * tx;           \
            int nx = min(4, W - 4 * tx);                                                     \
            _Pragma("unroll") for (int a = 0; a < 4; a++)                                    \
            {                                                                                \
                float4 v = (float4)(r[a][0].s##l, r[a][1].s##l, r[a][2].s##l, r[a][3].s##l); \
                if (4 * ty + a < H) {                                                        \
                    if (nx == 4) {                                                           \
                        vstore4(v, 0, ys + a * W);                                           \
                    } else {                                                                 \
                        ys[a * W] = v.x;                                                     \
                        if (nx > 1) ys[a * W + 1] = v.y;                                     \
                        if (nx > 2) ys[a * W + 2] = v.z;                                     \
                    }                                                                        \
                }                                                                            \
            }                                                                                \
        }                                                                                    \
    }
    WINO_LANE_OUT(0)
    WINO_LANE_OUT(1)
    WINO_LANE_OUT(2) WINO_LANE_OUT(3) WINO_LANE_OUT(4) WINO_LANE_OUT(5) WINO_LANE_OUT(6) WINO_LANE_OUT(7)
}

inline void wino_output_item(int i, __global const float *mo, int moo, __global float *y, int yo, int M,
                             int NB, int H, int W, int TH, int TW, int TWp, int Tp, int em,
                             __global const float *bias, int biaso, int has_bias)
{
    int NI = Tp / 8, m = i / NI, t0 = 8 * (i - (i / NI) * NI);
    const __global float *src = mo + moo + (size_t)m * Tp + t0;
    size_t es = (size_t)em;
    float8 s[4][6]; /* s[a][j] = (A^T Mo)[a][j] */
#pragma unroll
    for (int j = 0; j < 6; j++) {
        float8 o[4];
        WINO_AT(vload8(0, src + (0 * 6 + j) * es), vload8(0, src + (1 * 6 + j) * es),
                vload8(0, src + (2 * 6 + j) * es), vload8(0, src + (3 * 6 + j) * es),
                vload8(0, src + (4 * 6 + j) * es), vload8(0, src + (5 * 6 + j) * es), o);
#pragma unroll
        for (int a = 0; a < 4; a++) s[a][j] = o[a];
    }
    wino_output_store(s, has_bias ? bias[biaso + m] : 0.0f, m, t0, y, yo, M, NB, H, W, TH, TW, TWp);
}

__kernel void wino_output(__global const float *mo, int moo, __global float *y, int yo, int M, int NB, int H,
                          int W, int TH, int TW, int TWp, int Tp, int em, __global const float *bias,
                          int biaso, int has_bias)
{
    FOR_ITEMS(i, M * (Tp / 8))
    wino_output_item(i, mo, moo, y, yo, M, NB, H, W, TH, TW, TWp, Tp, em, bias, biaso, has_bias);
}

/* The whole convolution of 16 tiles (two groups of 8) in one kernel, for
 * CPUs (one work-item per work-group): V of their C channels (36 x C x 2
 * float8) goes to local memory, then for each 6-row block of U the 36
 * products (wino_gemm's register tile and its order of sums: the same
 * results) into private memory and the output transform from there. V and
 * Mo never leave the core's caches, and one launch covers the whole batch.
 * vs: 72 * C float8. */
__kernel void wino_fused(__global const float *x, int xo, __global const float *u, int uo, int eu,
                         __global float *y, int yo, int M, int C, int NB, int H, int W, int TH, int TW,
                         int TWp, int Tp, __global const float *bias, int biaso, int has_bias,
                         __local float8 *vs)
{
    FOR_ITEMS(g, Tp / 16)
    {
        for (int h = 0; h < 2; h++)
            for (int c = 0; c < C; c++) {
                float8 s[6][6];
                wino_input_rows(x, xo, c, 16 * g + 8 * h, C, NB, H, W, TH, TWp, s);
#pragma unroll
                for (int j = 0; j < 6; j++) {
                    float8 o[6];
                    WINO_BT(s[0][j], s[1][j], s[2][j], s[3][j], s[4][j], s[5][j], o);
#pragma unroll
                    for (int a = 0; a < 6; a++) vs[((a * 6 + j) * C + c) * 2 + h] = o[a];
                }
            }
        for (int mb = 0; mb * 6 < M; mb++) {
            float8 acc[36][6][2];
            for (int e = 0; e < 36; e++) {
                const __global float *pa = u + uo + (size_t)e * eu + mb * C * 6;
                const __local float8 *pb = vs + e * C * 2;
                float8 c00 = 0.0f, c01 = 0.0f, c10 = 0.0f, c11 = 0.0f, c20 = 0.0f, c21 = 0.0f;
                float8 c30 = 0.0f, c31 = 0.0f, c40 = 0.0f, c41 = 0.0f, c50 = 0.0f, c51 = 0.0f;
                for (int k = 0; k < C; k++) {
                    float8 b0 = pb[0], b1 = pb[1];
                    WINO_FMA(0) WINO_FMA(1) WINO_FMA(2) WINO_FMA(3) WINO_FMA(4) WINO_FMA(5) pa += 6;
                    pb += 2;
                }
                acc[e][0][0] = c00, acc[e][0][1] = c01, acc[e][1][0] = c10, acc[e][1][1] = c11;
                acc[e][2][0] = c20, acc[e][2][1] = c21, acc[e][3][0] = c30, acc[e][3][1] = c31;
                acc[e][4][0] = c40, acc[e][4][1] = c41, acc[e][5][0] = c50, acc[e][5][1] = c51;
            }
            for (int r = 0; r < 6 && mb * 6 + r < M; r++)
                for (int h = 0; h < 2; h++) {
                    float8 s[4][6];
#pragma unroll
                    for (int j = 0; j < 6; j++) {
                        float8 o[4];
                        WINO_AT(acc[j][r][h], acc[6 + j][r][h], acc[12 + j][r][h], acc[18 + j][r][h],
                                acc[24 + j][r][h], acc[30 + j][r][h], o);
#pragma unroll
                        for (int a = 0; a < 4; a++) s[a][j] = o[a];
                    }
                    int m = mb * 6 + r;
                    wino_output_store(s, has_bias ? bias[biaso + m] : 0.0f, m, 16 * g + 8 * h, y, yo, M, NB,
                                      H, W, TH, TW, TWp);
                }
        }
    }
}

/* ------------------------------------------------------------ weight gradient
 * dW of y = conv(x, W) on Winograd's transforms: with U = G g G^T, V the
 * input transform of x and Y = A^T (U .* V) A per tile, the exact adjoint is
 *   dMo[e] (M, T) = A dY A^T          (wino_dy: 4x4 -> 6x6 per tile)
 *   dU[e] (M, C)  = sum over chunks of dMo[e] V[e]^T   (a batched GEMM, K = T)
 *   dW[m, c]      = G^T dU[., m, c] G                   (wino_wgrad: 6x6 -> 3x3)
 * Tiles without data (padding of rows, rows past the last) get dMo = 0 so
 * the sum over T sees only real tiles. */
#define WINO_A(y0, y1, y2, y3, o)                      \
    {                                                  \
        o[0] = y0;                                     \
        o[1] = y0 + y1 + y2 + y3;                      \
        o[2] = y0 - y1 + y2 - y3;                      \
        o[3] = y0 + 2.0f * y1 + 4.0f * y2 + 8.0f * y3; \
        o[4] = y0 - 2.0f * y1 + 4.0f * y2 - 8.0f * y3; \
        o[5] = y3;                                     \
    }

/* dMo[e] (M, Tp) for channel m = i / NI and the 8 tiles from t0 = 8 * (i %
 * NI), NI = Tp / 8, from dy (nb, M, H, W) read in place (positions past the
 * plane, of tiles that overhang it, read as 0). */
inline void wino_dy_item(int i, __global const float *dy, int dyo, __global float *mo, int moo, int M, int NB,
                         int H, int W, int TH, int TWp, int Tp, int em)
{
    int NI = Tp / 8, m = i / NI, t0 = 8 * (i - (i / NI) * NI);
    int rows = NB * TH;
    float8 r[4][6]; /* r[k][j]: tile row k, adjoint-transformed along x */
    float8 keep = 1.0f;
    if (TWp >= 8) { /* 8 tiles of one row */
        int gr = min(t0 / TWp, rows - 1), tx0 = t0 - (t0 / TWp) * TWp;
        if (t0 / TWp >= rows) keep = 0.0f;
        int b = gr / TH, ty = gr - (gr / TH) * TH;
        int cb = 4 * tx0, n = W - cb;
        const __global float *p = dy + dyo + (size_t)(b * M + m) * H * W + cb;
#pragma unroll
        for (int k = 0; k < 4; k++) {
            int y = 4 * ty + k;
            float8 a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
            if (y < H) {
                const __global float *q = p + y * W;
                a0 = wino_load8(q, n, 0), a1 = wino_load8(q, n, 8), a2 = wino_load8(q, n, 16);
                a3 = wino_load8(q, n, 24);
            }
            float8 y0, y1, y2, y3;
            WINO_SPLIT4(a0, a1, a2, a3, y0, y1, y2, y3)
            WINO_A(y0, y1, y2, y3, r[k]);
        }
    } else if (TWp == 4 || TWp == 2) { /* 8/TWp whole rows of tiles (W <= 16): segments from column 0 */
        const __global float *ph[4];   /* each row's plane */
        int yh[4];                     /* and its first row */
        float k_[8];
#pragma unroll
        for (int h = 0; h < 4; h++) {
            int gr = min(t0 / TWp + h, rows - 1);
            int b = gr / TH, ty = gr - (gr / TH) * TH;
            ph[h] = dy + dyo + (size_t)(b * M + m) * H * W;
            yh[h] = 4 * ty;
        }
#pragma unroll
        for (int l = 0; l < 8; l++) k_[l] = (t0 + l) / TWp < rows ? 1.0f : 0.0f;
        keep = vload8(0, k_);
#pragma unroll
        for (int k = 0; k < 4; k++) {
            float8 lo[4], hi[4], y0, y1, y2, y3;
            int y[4] = {yh[0] + k, yh[1] + k, yh[2] + k, yh[3] + k};
            wino_rows(ph, y, TWp, H, W, lo, hi);
            if (TWp == 4)
                WINO_SPLIT4(lo[0], hi[0], lo[1], hi[1], y0, y1, y2, y3)
            else
                WINO_SPLIT4(lo[0], lo[1], lo[2], lo[3], y0, y1, y2, y3)
            WINO_A(y0, y1, y2, y3, r[k]);
        }
    } else { /* TWp == 1: 8 rows of one tile, per-lane loads */
        float g_[4][4][8], k_[8];
#pragma unroll
        for (int l = 0; l < 8; l++) {
            int t = t0 + l, gr = min(t, rows - 1);
            int b = gr / TH, ty = gr - (gr / TH) * TH;
            const __global float *q = dy + dyo + (size_t)(b * M + m) * H * W;
            k_[l] = t < rows ? 1.0f : 0.0f;
#pragma unroll
            for (int k = 0; k < 4; k++)
#pragma unroll
                for (int j = 0; j < 4; j++) {
                    int y = 4 * ty + k;
                    g_[k][j][l] = y < H && j < W ? q[y * W + j] : 0.0f;
                }
        }
        keep = vload8(0, k_);
#pragma unroll
        for (int k = 0; k < 4; k++)
            WINO_A(vload8(0, g_[k][0]), vload8(0, g_[k][1]), vload8(0, g_[k][2]), vload8(0, g_[k][3]), r[k]);
    }
    __global float *dst = mo + moo + (size_t)m * Tp + t0;
#pragma unroll
    for (int j = 0; j < 6; j++) {
        float8 o[6];
        WINO_A(r[0][j], r[1][j], r[2][j], r[3][j], o);
#pragma unroll
        for (int a = 0; a < 6; a++) vstore8(o[a] * keep, 0, dst + (a * 6 + j) * (size_t)em);
    }
}

__kernel void wino_dy(__global const float *dy, int dyo, __global float *mo, int moo, int M, int NB, int H,
                      int W, int TH, int TWp, int Tp, int em)
{
    FOR_ITEMS(i, M * (Tp / 8)) wino_dy_item(i, dy, dyo, mo, moo, M, NB, H, W, TH, TWp, Tp, em);
}

/* 1-D adjoint of G: 6 values -> 3 */
#define WINO_GT(u0, u1, u2, u3, u4, u5, o)                                          \
    {                                                                               \
        o[0] = 0.25f * u0 - (u1 + u2) * (1.0f / 6.0f) + (u3 + u4) * (1.0f / 24.0f); \
        o[1] = (u2 - u1) * (1.0f / 6.0f) + (u3 - u4) * (1.0f / 12.0f);              \
        o[2] = (u3 + u4 - u1 - u2) * (1.0f / 6.0f) + u5;                            \
    }

/* dw (M, C, 3, 3) = G^T dU[., m, c] G, dU[e] (M, C) row-major at du + e * eu.
 * Items (m, c). */
inline void wino_wgrad_item(int i, __global const float *du, int duo, int eu, __global float *dw, int dwo)
{
    const __global float *s = du + duo + i;
    float t[6][3]; /* dU G, row a */
#pragma unroll
    for (int a = 0; a < 6; a++) {
        float o[3];
        WINO_GT(s[(a * 6 + 0) * (size_t)eu], s[(a * 6 + 1) * (size_t)eu], s[(a * 6 + 2) * (size_t)eu],
                s[(a * 6 + 3) * (size_t)eu], s[(a * 6 + 4) * (size_t)eu], s[(a * 6 + 5) * (size_t)eu], o);
#pragma unroll
        for (int k = 0; k < 3; k++) t[a][k] = o[k];
    }
    __global float *d = dw + dwo + i * 9;
#pragma unroll
    for (int kx = 0; kx < 3; kx++) {
        float o[3];
        WINO_GT(t[0][kx], t[1][kx], t[2][kx], t[3][kx], t[4][kx], t[5][kx], o);
#pragma unroll
        for (int ky = 0; ky < 3; ky++) d[ky * 3 + kx] = o[ky];
    }
}

__kernel void wino_wgrad(__global const float *du, int duo, int eu, __global float *dw, int dwo, int n)
{
    FOR_ITEMS(i, n) wino_wgrad_item(i, du, duo, eu, dw, dwo);
}
