/* Shared-memory helpers for ratelimit.pyx: the monotonic clock and a
 * cross-process spinlock built on GCC atomics.
 *
 * The lock word holds the holder's pid (0: free). A waiter that has spun for
 * a while checks whether the holder still exists and takes the lock over if
 * it does not: a worker killed inside the few-instruction critical section
 * must not wedge its bucket for every other worker forever.
 */
#ifndef FASTGW_RL_ATOMIC_H
#define FASTGW_RL_ATOMIC_H

#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

static inline int64_t rl_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000LL + (int64_t)ts.tv_nsec;
}

static inline void rl_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static inline void rl_lock(uint32_t *word, uint32_t pid)
{
    uint32_t expected, holder;
    unsigned long spins = 0;
    for (;;) {
        if (__atomic_load_n(word, __ATOMIC_RELAXED) == 0) {
            expected = 0;
            if (__atomic_compare_exchange_n(word, &expected, pid, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
                return;
        }
        spins++;
        if (spins < 256) {
            rl_cpu_relax();
            continue;
        }
        /* The holder is descheduled (more runnable processes than cores) or dead. */
        sched_yield();
        if ((spins & 255) == 0) {
            holder = __atomic_load_n(word, __ATOMIC_RELAXED);
            if (holder != 0 && holder != pid && kill((pid_t)holder, 0) == -1 && errno == ESRCH) {
                expected = holder;
                if (__atomic_compare_exchange_n(word, &expected, pid, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
                    return;
            }
        }
    }
}

static inline void rl_unlock(uint32_t *word)
{
    __atomic_store_n(word, 0, __ATOMIC_RELEASE);
}

#endif
