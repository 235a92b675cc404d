"""Build the Cython hot-path modules in fastgw/_native/ at install time.

`FASTGW_DEBUG=1 pip install -e .` compiles with bounds checks and line tracing
for profiling; the default is an optimised build.
"""
import os

from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("FASTGW_DEBUG") == "1"
NATIVE = ["codes", "router", "headers", "deadlines", "metrics", "accesslog", "proxy", "ratelimit", "limiter",
          "concurrency", "authgate"]
# The C helpers every module may include (atomics, clock, shared memory).
INCLUDES = "fastgw/_native/includes"

extensions = [
    Extension(
        f"fastgw._native.{name}",
        [f"fastgw/_native/{name}.pyx"],
        include_dirs=[INCLUDES],
        extra_compile_args=["-O2"] if not DEBUG else ["-O0", "-g"],
        define_macros=[("CYTHON_TRACE", "1")] if DEBUG else [],
    )
    for name in NATIVE
]

setup(
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={
            "boundscheck": DEBUG,
            "wraparound": DEBUG,
            "linetrace": DEBUG,
            "embedsignature": True,
        },
    ),
)
