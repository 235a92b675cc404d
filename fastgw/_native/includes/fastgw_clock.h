/* The one clock of the native layer: CLOCK_MONOTONIC in integer ns.
 *
 * It is one clock for every process on a Linux host (the shared rate-limit
 * table compares times taken in different workers) and the clock Python's
 * time.monotonic_ns() reads, so tests can drive it from Python.
 */
#ifndef FASTGW_CLOCK_H
#define FASTGW_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline int64_t fg_monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + (int64_t)ts.tv_nsec;
}

#endif
