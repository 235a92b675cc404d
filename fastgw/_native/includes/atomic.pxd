# Cython declarations of fastgw_atomic.h (atomics on shared memory and the
# pid spinlock). `from fastgw._native.includes.atomic cimport ...`
from libc.stdint cimport int64_t, uint32_t

cdef extern from "fastgw_atomic.h" nogil:
    int64_t fg_load_i64(int64_t *p)
    void fg_store_i64(int64_t *p, int64_t v)
    void fg_add_i64(int64_t *p, int64_t v)
    uint32_t fg_load_acquire_u32(uint32_t *p)
    void fg_store_release_u32(uint32_t *p, uint32_t v)
    bint fg_cas_u32(uint32_t *p, uint32_t expected, uint32_t desired)
    bint fg_process_gone(uint32_t pid)
    void fg_pid_lock(uint32_t *word, uint32_t pid)
    void fg_pid_unlock(uint32_t *word)
