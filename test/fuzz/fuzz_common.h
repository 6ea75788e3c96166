/* Shared by the libFuzzer harnesses: the library's loaders take paths, so a
 * harness hands them its input through an in-memory file (memfd), reached
 * as /proc/self/fd/N. No disk I/O, nothing left behind. */
#ifndef CLD_FUZZ_COMMON_H
#define CLD_FUZZ_COMMON_H

#define _GNU_SOURCE
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

/* slot 0..3: each a separate file, rewritten with data[0..n) on every call */
static inline const char *fuzz_file(int slot, const uint8_t *data, size_t n)
{
    static int fd[4] = {-1, -1, -1, -1};
    static char path[4][64];
    if (fd[slot] < 0) {
        fd[slot] = memfd_create("cld-fuzz", 0);
        if (fd[slot] < 0) {
            perror("memfd_create");
            abort(); /* the harness, not the library: no fuzzing without it */
        }
        snprintf(path[slot], sizeof path[slot], "/proc/self/fd/%d", fd[slot]);
    }
    if (ftruncate(fd[slot], 0) != 0 || (n && pwrite(fd[slot], data, n, 0) != (ssize_t)n)) {
        perror("memfd write");
        abort();
    }
    return path[slot];
}

#endif
