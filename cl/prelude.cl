/* The prelude: definitions every program shares. The program loader
 * (engine/src/runtime/program.c) puts this file, after a #line naming it,
 * before every program's source (once at the top of the bundle), so the
 * kernels in cl/ use these without defining them again. It is not a
 * program of its own.
 *
 * FOR_ITEMS(i, n): the items of a 1-D launch by cld__launch1d over n items,
 * any geometry: work-group j of G takes the contiguous items
 * [j*per, (j+1)*per), per = ceil(n / G), interleaved over its work-items. On
 * CPUs the host runs one work-item per group, which walks its range as a
 * plain loop; on GPUs 64. */
#define FOR_ITEMS(i, n)                                                          \
    for (int per_ = ((n) + (int)get_num_groups(0) - 1) / (int)get_num_groups(0), \
             end_ = min((n), per_ * ((int)get_group_id(0) + 1)),                 \
             i = per_ * (int)get_group_id(0) + (int)get_local_id(0);             \
         i < end_; i += (int)get_local_size(0))

/* CLD_ITEM: the item of a one-work-item-per-item launch (cld__launch_items:
 * past 65535 work-items the grid is folded into 2-D). */
#define CLD_ITEM ((int)(get_global_id(1) * get_global_size(0) + get_global_id(0)))

/* cld_exp: exp(x) inlined, for the sigmoid of the group norm's fused SiLU
 * in the backward pass (cl/norm.cl), where PoCL's exp() took about half of
 * the two kernels' time (13-16 ms of a 600 ms train step, bench/NOTES.md).
 * x = n ln2 + r (Cody-Waite, |r| <= ln2/2; n by the 1.5 * 2^23 rounding
 * trick), e^r by its degree-6 Taylor polynomial, times 2^n built in the
 * exponent bits; x clamped to [-87, 88] (no denormals, no overflow).
 * At most 2.3e-7 relative error over that range (test_runtime). */
#define CLD_EXP_BODY(T, IT, x)                               \
    T x_ = fmin(fmax(x, (T)(-87.0f)), (T)88.0f);             \
    T k_ = fma(x_, (T)1.44269504088896341f, (T)12582912.0f); \
    T n_ = k_ - (T)12582912.0f;                              \
    T r_ = fma(n_, (T)(-0.693145751953125f), x_);            \
    r_ = fma(n_, (T)(-1.428606765330187e-06f), r_);          \
    T p_ = fma(r_, (T)(1.0f / 720.0f), (T)(1.0f / 120.0f));  \
    p_ = fma(p_, r_, (T)(1.0f / 24.0f));                     \
    p_ = fma(p_, r_, (T)(1.0f / 6.0f));                      \
    p_ = fma(p_, r_, (T)0.5f);                               \
    p_ = fma(p_, r_, (T)1.0f);                               \
    p_ = fma(p_, r_, (T)1.0f);                               \
    return p_ * as_##T((as_##IT(k_) - (IT)0x4B400000 + (IT)127) << (IT)23);
inline float cld_exp(float x) { CLD_EXP_BODY(float, int, x) }
inline float8 cld_exp8(float8 x) { CLD_EXP_BODY(float8, int8, x) }
