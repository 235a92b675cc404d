"""fastgw: an HTTP/1.1 API gateway and reverse proxy on uvloop, httptools and Cython."""

__version__ = "0.1.0"
