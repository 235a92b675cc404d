# Cython declarations of fastgw_shm.h. `from fastgw._native.includes.shm cimport ...`

cdef extern from "fastgw_shm.h" nogil:
    void *fg_shared_map(size_t nbytes)
    void fg_shared_unmap(void *mem, size_t nbytes)
