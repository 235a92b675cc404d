# Cython declarations of fastgw_clock.h. `from fastgw._native.includes.clock cimport fg_monotonic_ns`
from libc.stdint cimport int64_t

cdef extern from "fastgw_clock.h" nogil:
    int64_t fg_monotonic_ns()
