/* Atomics on shared memory, and a cross-process spinlock built on them.
 *
 * One copy for every table mapped before the fork (ratelimit.pyx,
 * concurrency.pyx): GCC __atomic builtins, so no C11 <stdatomic.h> types are
 * needed on the structs shared with Cython.
 *
 * The lock word holds the holder's pid (0: free). A waiter that has spun for
 * a while checks whether the holder still exists and takes the lock over if
 * it does not: a worker killed inside the few-instruction critical section
 * must not wedge its bucket or record for every other worker forever.
 */
#ifndef FASTGW_ATOMIC_H
#define FASTGW_ATOMIC_H

#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <sys/types.h>

/* Relaxed loads and stores of counters: each word has one writer (or is
 * written under the lock), readers only need untorn values. */
static inline int64_t fg_load_i64(int64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
static inline void fg_store_i64(int64_t *p, int64_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }
static inline void fg_add_i64(int64_t *p, int64_t v) { __atomic_fetch_add(p, v, __ATOMIC_RELAXED); }

/* Owner words (a pid): published with release, read with acquire, so what
 * the owner wrote before claiming or freeing is seen by the next reader. */
static inline uint32_t fg_load_acquire_u32(uint32_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline void fg_store_release_u32(uint32_t *p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
static inline int fg_cas_u32(uint32_t *p, uint32_t expected, uint32_t desired)
{
    return __atomic_compare_exchange_n(p, &expected, desired, 0, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED);
}

/* Only ESRCH says the process is gone; EPERM means it exists. */
static inline int fg_process_gone(uint32_t pid)
{
    return kill((pid_t)pid, 0) == -1 && errno == ESRCH;
}

static inline void fg_cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static inline void fg_pid_lock(uint32_t *word, uint32_t pid)
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
            fg_cpu_relax();
            continue;
        }
        /* The holder is descheduled (more runnable processes than cores) or dead. */
        sched_yield();
        if ((spins & 255) == 0) {
            holder = __atomic_load_n(word, __ATOMIC_RELAXED);
            if (holder != 0 && holder != pid && fg_process_gone(holder)) {
                expected = holder;
                if (__atomic_compare_exchange_n(word, &expected, pid, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED))
                    return;
            }
        }
    }
}

static inline void fg_pid_unlock(uint32_t *word)
{
    __atomic_store_n(word, 0, __ATOMIC_RELEASE);
}

#endif
