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
