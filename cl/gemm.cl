/* General matrix product, row-major, strided-batched (engine/src/blas.c):
 *   C[z] = alpha op(A[z]) op(B[z]) + beta C[z],   z < batch
 * op(A) (M, K): A[m*lda + k], or A[k*lda + m] if A is transposed (TA)
 * op(B) (K, N): B[k*ldb + n], or B[n*ldb + k] if B is transposed (TB)
 * Every buffer argument is followed by its offset in floats; sa, sb, sc are
 * batch strides in floats (0: the matrix is shared by the batch). With
 * beta == 0, C is not read (NaN-safe).
 *
 * The micro-kernel (BLIS's): each work-item computes a TM x TN tile of C in
 * registers, TM x (TN/VW) vectors of VW floats; each step of the K loop
 * loads TN values of op(B) as vectors and TM scalars of op(A), broadcast,
 * and does TM*TN/VW vector FMAs (6 x 16 with float8: 12 accumulators of the
 * 16 AVX2 registers). On a CPU it is launched with local size 1x1x1, so
 * PoCL runs one work-item per work-group and the explicit vectors become
 * SIMD registers. Kernels, all 3-D launches with z = batch entry:
 *   gemm_nn/tn/nt/tt   op(A), op(B) read in place (t: transposed)
 *   gemm_pack_a/b(_rows)  copy op(A) / op(B) into zero-padded panels
 *   gemm_packed_ab     the micro-kernel on packed panels of both
 *   gemm_packed_b      same with A (not transposed) read in place
 *   gemm_dot           A B^T as dot products along K
 * (engine/src/blas.c picks one per product; bench/NOTES.md, GEMM, says why.)
 * Options (-D): TM, TN, VW (4, 8 or 16; TN a multiple of VW), KU (K-loop
 * unroll: 1, 2, 4 or 8); DM, DN, DVW (gemm_dot). One program holds every
 * kernel of a configuration. */

/* defaults = cld__gemm_default_cfg (runtime/blas.c): built with no options */
#ifndef TM
#define TM 6
#endif
#ifndef TN
#define TN 16
#endif
#ifndef VW
#define VW 8
#endif
#ifndef KU
#define KU 4
#endif
#ifndef DM
#define DM 3
#endif
#ifndef DN
#define DN 4
#endif
#ifndef DVW
#define DVW 8
#endif

#define NV (TN / VW)
#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)
#define VT CAT(float, VW)
#define VLOAD CAT(vload, VW)
#define VSTORE CAT(vstore, VW)

/* acc[i][*] += a * b[*] */
#define FMA_ROW(i, a)                                                           \
    {                                                                           \
        VT a_ = (VT)(a);                                                        \
        _Pragma("unroll") for (int v_ = 0; v_ < NV; v_++) acc[i][v_] =          \
            fma(a_, b[v_], acc[i][v_]);                                         \
    }
#define ZERO_ACC                                                                \
    VT acc[TM][NV];                                                             \
    _Pragma("unroll") for (int i_ = 0; i_ < TM; i_++)                           \
        _Pragma("unroll") for (int v_ = 0; v_ < NV; v_++) acc[i_][v_] = (VT)0.0f;

/* C rows m0.., columns n0.. = alpha acc (+ bias[m] when has_bias) + beta C;
 * rows past M, columns past N and columns before nfrom (>= n0) are not
 * stored. The columns run in segments of P: element (m, j) at C + (j / P)
 * * sB + m * ldc + j % P (store_tile: P = N, a plain matrix; conv.c's
 * im2col path: its (batch, M, P) output, sB = M * P, ldc = P, with bias,
 * added before beta C). */
inline void store_tile_seg(__global float *C, int ldc, int m0, int n0, int nfrom, int M, int N,
                           float alpha, float beta, VT (*acc)[NV], int P, int sB,
                           __global const float *bias, int has_bias)
{
    int seg = n0 / P, p0 = n0 - seg * P;
    int full = n0 + TN <= N && nfrom == n0 && p0 + TN <= P;
#pragma unroll
    for (int i = 0; i < TM; i++) {
        if (m0 + i >= M) break;
        float bv = has_bias ? bias[m0 + i] : 0.0f;
        if (full) {
            __global float *pc = C + seg * sB + (m0 + i) * ldc + p0;
#pragma unroll
            for (int v = 0; v < NV; v++) {
                VT r = alpha * acc[i][v];
                if (has_bias) r += bv;
                if (beta != 0.0f) r = fma((VT)beta, VLOAD(v, pc), r);
                VSTORE(r, v, pc);
            }
        } else {
#pragma unroll
            for (int v = 0; v < NV; v++) {
                float t[VW];
                VT r = alpha * acc[i][v];
                if (has_bias) r += bv;
                VSTORE(r, 0, t);
                for (int e = 0; e < VW; e++) {
                    int j = n0 + v * VW + e;
                    if (j >= N) break;
                    if (j < nfrom) continue;
                    __global float *pc = C + (j / P) * sB + (m0 + i) * ldc + j % P;
                    *pc = beta != 0.0f ? fma(beta, *pc, t[e]) : t[e];
                }
            }
        }
    }
}

#define store_tile(C, ldc, m0, n0, nfrom, M, N, alpha, beta, acc) \
    store_tile_seg(C, ldc, m0, n0, nfrom, M, N, alpha, beta, acc, N, 0, C, 0)

/* ------------------------------------------------------------------ gemm */

/* Element (m, k) of op(A) / (k, n) of op(B); ta, tb are constants. */
#define A_AT(m, k) (ta ? A[(k) * lda + (m)] : A[(m) * lda + (k)])
#define B_AT(k, n) (tb ? B[(n) * ldb + (k)] : B[(k) * ldb + (n)])

/* The TN values of row k of op(B) from column n0, as NV vectors; columns
 * past N (edge = 1) read column N-1: they are computed, not stored. */
inline void load_b(__global const float *B, int ldb, int k, int n0, int N, int edge, int tb,
                   VT *b)
{
    if (!tb && !edge) {
#pragma unroll
        for (int v = 0; v < NV; v++) b[v] = VLOAD(v, B + k * ldb + n0);
        return;
    }
#pragma unroll
    for (int v = 0; v < NV; v++) {
        float t[VW];
#pragma unroll
        for (int e = 0; e < VW; e++) {
            int n = n0 + v * VW + e;
            t[e] = B_AT(k, edge ? min(n, N - 1) : n);
        }
        b[v] = VLOAD(0, t);
    }
}

#define GEMM_STEP(k, edge)                                                      \
    {                                                                           \
        VT b[NV];                                                               \
        load_b(B, ldb, (k), n0, N, (edge), tb, b);                              \
        _Pragma("unroll") for (int i = 0; i < TM; i++) FMA_ROW(i, A_AT(mi[i], (k))) \
    }

/* op(A), op(B) read in place. Rows past M read row M-1. The last column
 * of tiles, if partial, is computed shifted left to end at column N (over
 * columns of its neighbour, which it does not store); only if N < TN do
 * columns past N read column N-1, on a slower path. The kernels gemm_nn,
 * gemm_tn (A transposed), gemm_nt, gemm_tt call it with constant ta, tb.
 * Launch (ceil(M/TM), ceil(N/TN), batch). */
inline void gemm_body(int M, int N, int K, float alpha, __global const float *A, int ao, int lda,
                      int sa, __global const float *B, int bo, int ldb, int sb, float beta,
                      __global float *C, int co, int ldc, int sc, const int ta, const int tb)
{
    int m0 = get_global_id(0) * TM, nfrom = get_global_id(1) * TN, z = get_global_id(2);
    if (m0 >= M || nfrom >= N) return;
    int n0 = nfrom + TN <= N || N < TN ? nfrom : N - TN;
    A += ao + z * sa;
    B += bo + z * sb;
    C += co + z * sc;
    int mi[TM];
#pragma unroll
    for (int i = 0; i < TM; i++) mi[i] = min(m0 + i, M - 1);
    ZERO_ACC
    if (n0 + TN <= N) {
        int k = 0;
        for (; k + KU <= K; k += KU) {
#pragma unroll
            for (int u = 0; u < KU; u++) GEMM_STEP(k + u, 0)
        }
        for (; k < K; k++) GEMM_STEP(k, 0)
    } else {
        for (int k = 0; k < K; k++) GEMM_STEP(k, 1)
    }
    store_tile(C, ldc, m0, n0, nfrom, M, N, alpha, beta, acc);
}

#define GEMM_KERNEL(name, ta, tb)                                                                  \
    __kernel void name(int M, int N, int K, float alpha, __global const float *A, int ao,         \
                       int lda, int sa, __global const float *B, int bo, int ldb, int sb,         \
                       float beta, __global float *C, int co, int ldc, int sc)                    \
    {                                                                                              \
        gemm_body(M, N, K, alpha, A, ao, lda, sa, B, bo, ldb, sb, beta, C, co, ldc, sc, ta, tb);  \
    }
GEMM_KERNEL(gemm_nn, 0, 0)
GEMM_KERNEL(gemm_tn, 1, 0)
GEMM_KERNEL(gemm_nt, 0, 1)
GEMM_KERNEL(gemm_tt, 1, 1)

/* ------------------------------------------------------------------ packing */

/* Panels of R rows: dst[((z*P + p)*L + l)*R + r] = S(p*R + r, l) for
 * u = p*R + r < U, 0 for U <= u < P*R, l < L, P = ceil(U/R), with
 * S(u, l) = src[so + z*ss + u*su + l*sl]. One work-item per (l, p, z)
 * writes R consecutive floats; launch (L - l0, P - p0, batch) for l0..,
 * panels p0..,
 * local 64x1x1 (on PoCL every work-group costs ~30 ns: small ones are
 * slow). */
inline void pack_panel(__global float *dst, int dso, __global const float *src, int so, int su,
                       int sl, int ss, int U, int L, int l0, int p0, int R)
{
    int l = l0 + get_global_id(0), p = p0 + get_global_id(1), z = get_global_id(2);
    if (l >= L) return;
    int P = (U + R - 1) / R, u0 = p * R;
    __global float *d = dst + dso + ((z * P + p) * L + l) * R;
    const __global float *s = src + so + z * ss + l * sl + u0 * su;
    if (u0 + R <= U) {
        if (su == 1)
            for (int r = 0; r < R; r++) d[r] = s[r];
        else
            for (int r = 0; r < R; r++) d[r] = s[r * su];
    } else {
        for (int r = 0; r < R; r++) d[r] = u0 + r < U ? s[r * su] : 0.0f;
    }
}

/* op(A) (M, K) in panels of TM rows: S(m, k) = op(A)(m, k) */
__kernel void gemm_pack_a(__global float *dst, int dso, __global const float *src, int so,
                          int su, int sl, int ss, int U, int L, int l0, int p0)
{
    pack_panel(dst, dso, src, so, su, sl, ss, U, L, l0, p0, TM);
}

/* op(B) (K, N) in panels of TN columns: S(n, k) = op(B)(k, n) */
__kernel void gemm_pack_b(__global float *dst, int dso, __global const float *src, int so,
                          int su, int sl, int ss, int U, int L, int l0, int p0)
{
    pack_panel(dst, dso, src, so, su, sl, ss, U, L, l0, p0, TN);
}

/* gemm_pack_b for B not transposed (su = 1), full panels p < U/TN only: rows of
 * B copied as vectors, 8 rows l by 8 panels per work-item, so that reads
 * and writes both run over 512 contiguous bytes (1.5x faster than one row
 * of one panel per work-item when B's rows are far apart). Launch
 * (ceil(L/8), ceil((U/TN)/8), batch), local 1x8x1. Kept apart from gemm_pack_b:
 * PoCL vectorizes across the work-items of a mixed kernel and loses the
 * explicit vectors. */
__kernel void gemm_pack_b_rows(__global float *dst, int dso, __global const float *src,
                               int so, int sl, int ss, int U, int L)
{
    int l0 = get_global_id(0) * 8, p0 = get_global_id(1) * 8, z = get_global_id(2);
    int P = (U + TN - 1) / TN, full = U / TN;
    for (int x = 0; x < 8 && l0 + x < L; x++) {
        const __global float *s = src + so + z * ss + (l0 + x) * sl;
        for (int q = 0; q < 8 && p0 + q < full; q++) {
            __global float *d = dst + dso + ((z * P + p0 + q) * L + l0 + x) * TN;
#pragma unroll
            for (int v = 0; v < NV; v++) VSTORE(VLOAD(v, s + (p0 + q) * TN), v, d);
        }
    }
}

/* ------------------------------------------------------------------ gemm_packed_ab */

/* The K loop of the micro-kernel on a packed panel pb of op(B), with A_EL(i, u)
 * the element of op(A) in row i of the tile, step k + u, and A_ADV(n)
 * advancing op(A) by n steps. */
#define PACKED_STEP(u)                                                          \
    {                                                                           \
        VT b[NV];                                                               \
        _Pragma("unroll") for (int v = 0; v < NV; v++) b[v] = VLOAD(v, pb + (u) * TN); \
        _Pragma("unroll") for (int i = 0; i < TM; i++) FMA_ROW(i, A_EL(i, u))   \
    }
#if KU == 1
#define PACKED_STEPS PACKED_STEP(0)
#elif KU == 2
#define PACKED_STEPS PACKED_STEP(0) PACKED_STEP(1)
#elif KU == 4
#define PACKED_STEPS PACKED_STEP(0) PACKED_STEP(1) PACKED_STEP(2) PACKED_STEP(3)
#else
#define PACKED_STEPS PACKED_STEP(0) PACKED_STEP(1) PACKED_STEP(2) PACKED_STEP(3) \
                     PACKED_STEP(4) PACKED_STEP(5) PACKED_STEP(6) PACKED_STEP(7)
#endif
#define PACKED_LOOP                                                             \
    {                                                                           \
        int k = 0;                                                              \
        for (; k + KU <= K; k += KU) {                                          \
            PACKED_STEPS                                                        \
            A_ADV(KU);                                                          \
            pb += KU * TN;                                                      \
        }                                                                       \
        for (; k < K; k++) {                                                    \
            PACKED_STEP(0)                                                      \
            A_ADV(1);                                                           \
            pb += TN;                                                           \
        }                                                                       \
    }

/* The micro-kernel on packed panels: op(A) as [ceil(M/TM)][K][TM], op(B)
 * as [ceil(N/TN)][K][TN], batch strides spa, spb (0: shared), both read
 * sequentially whatever the original strides (with leading dimensions that
 * are multiples of 1 KiB, direct reads of a panel collide in the caches'
 * sets). Panels are zero-padded: only the stores check edges. C as in
 * store_tile_seg (the BLAS path: P = N, sB = 0, no bias; conv.c's im2col
 * path: its (batch, M, P) output and bias: one kernel serves both).
 * Launch (ceil(M/TM), ceil(N/TN), batch). */
__kernel void gemm_packed_ab(int M, int N, int K, float alpha, __global const float *Ap,
                             int ao, int spa, __global const float *Bp, int bo, int spb,
                             float beta, __global float *C, int co, int ldc, int sc, int P, int sB,
                             __global const float *bias, int biaso, int has_bias)
{
    int mb = get_global_id(0), nb = get_global_id(1), z = get_global_id(2);
    int m0 = mb * TM, n0 = nb * TN;
    if (m0 >= M || n0 >= N) return;
    const __global float *pa = Ap + ao + z * spa + mb * K * TM;
    const __global float *pb = Bp + bo + z * spb + nb * K * TN;
    C += co + z * sc;
    ZERO_ACC
#define A_EL(i, u) pa[(u) * TM + (i)]
#define A_ADV(n) pa += (n) * TM
    PACKED_LOOP
#undef A_EL
#undef A_ADV
    store_tile_seg(C, ldc, m0, n0, n0, M, N, alpha, beta, acc, P, sB, bias + biaso, has_bias);
}

/* Same with op(A) = A (not transposed) read in place: its TM rows are
 * sequential streams already, and packing A costs as much as the product
 * when N is small. Rows past M read row M-1. */
__kernel void gemm_packed_b(int M, int N, int K, float alpha, __global const float *A, int ao,
                            int lda, int sa, __global const float *Bp, int bo, int spb,
                            float beta, __global float *C, int co, int ldc, int sc)
{
    int nb = get_global_id(1), z = get_global_id(2);
    int m0 = get_global_id(0) * TM, n0 = nb * TN;
    if (m0 >= M || n0 >= N) return;
    const __global float *pr[TM];
#pragma unroll
    for (int i = 0; i < TM; i++) pr[i] = A + ao + z * sa + min(m0 + i, M - 1) * lda;
    const __global float *pb = Bp + bo + z * spb + nb * K * TN;
    C += co + z * sc;
    ZERO_ACC
#define A_EL(i, u) pr[i][u]
#define A_ADV(n)                                                                \
    _Pragma("unroll") for (int i = 0; i < TM; i++) pr[i] += (n)
    PACKED_LOOP
#undef A_EL
#undef A_ADV
    store_tile(C, ldc, m0, n0, n0, M, N, alpha, beta, acc);
}

/* ------------------------------------------------------------------ gemm_dot */

#define DT CAT(float, DVW)
#define DLOAD CAT(vload, DVW)

inline float hsum(DT v)
{
#if DVW == 16
    float8 h8 = v.lo + v.hi;
#elif DVW == 8
    float8 h8 = v;
#endif
#if DVW >= 8
    float4 h4 = h8.lo + h8.hi;
#else
    float4 h4 = v;
#endif
    float2 h2 = h4.lo + h4.hi;
    return h2.x + h2.y;
}

/* C = alpha A B^T + beta C, A (M, K) and B (N, K) row-major, as dot
 * products along K: each work-item computes DM x DN outputs, accumulating
 * DM*DN vectors of DVW consecutive k (both operands read along their rows,
 * no transposes), summed across lanes at the end. Rows past M / N read row
 * M-1 / N-1 and are not stored. Launch (ceil(M/DM), ceil(N/DN), batch). */
__kernel void gemm_dot(int M, int N, int K, float alpha, __global const float *A, int ao, int lda,
                       int sa, __global const float *B, int bo, int ldb, int sb, float beta,
                       __global float *C, int co, int ldc, int sc)
{
    int m0 = get_global_id(0) * DM, n0 = get_global_id(1) * DN, z = get_global_id(2);
    if (m0 >= M || n0 >= N) return;
    A += ao + z * sa;
    B += bo + z * sb;
    C += co + z * sc;
    const __global float *pa[DM], *pb[DN];
#pragma unroll
    for (int i = 0; i < DM; i++) pa[i] = A + min(m0 + i, M - 1) * lda;
#pragma unroll
    for (int j = 0; j < DN; j++) pb[j] = B + min(n0 + j, N - 1) * ldb;
    DT acc[DM][DN];
#pragma unroll
    for (int i = 0; i < DM; i++)
#pragma unroll
        for (int j = 0; j < DN; j++) acc[i][j] = (DT)0.0f;
    int k = 0;
    for (; k + DVW <= K; k += DVW) {
        DT a[DM];
#pragma unroll
        for (int i = 0; i < DM; i++) a[i] = DLOAD(0, pa[i] + k);
#pragma unroll
        for (int j = 0; j < DN; j++) {
            DT b = DLOAD(0, pb[j] + k);
#pragma unroll
            for (int i = 0; i < DM; i++) acc[i][j] = fma(a[i], b, acc[i][j]);
        }
    }
    float r[DM][DN];
#pragma unroll
    for (int i = 0; i < DM; i++)
#pragma unroll
        for (int j = 0; j < DN; j++) r[i][j] = hsum(acc[i][j]);
    for (; k < K; k++)
#pragma unroll
        for (int i = 0; i < DM; i++)
#pragma unroll
            for (int j = 0; j < DN; j++) r[i][j] = fma(pa[i][k], pb[j][k], r[i][j]);
    for (int i = 0; i < DM; i++) {
        if (m0 + i >= M) break;
        __global float *pc = C + (m0 + i) * ldc + n0;
        for (int j = 0; j < DN; j++) {
            if (n0 + j >= N) break;
            float v = alpha * r[i][j];
            pc[j] = beta != 0.0f ? fma(beta, pc[j], v) : v;
        }
    }
}
