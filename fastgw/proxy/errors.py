"""Local replies (ProxyError, error_reply, answer_reply, CONTINUE_100):
defined in fastgw/_native/errors.py, below the native layer that raises and
sends them, so that fastgw/_native imports nothing from fastgw.proxy.
Re-exported here for the Python side that has always imported them from this
module.
"""
from fastgw._native.errors import CONTINUE_100, ProxyError, answer_reply, error_reply

__all__ = ["CONTINUE_100", "ProxyError", "answer_reply", "error_reply"]
