"""A small asyncio Redis client for the gateway's Redis-scoped rate limits:
hiredis parses the replies, the commands of concurrent requests are
pipelined (one write per loop iteration), every command has a short
deadline, and a lost connection is redialled in the background while
callers are answered at once. See client.py."""
from fastgw.redis.client import RedisClient, RedisUnavailable, Script, encode_command

__all__ = ["RedisClient", "RedisUnavailable", "Script", "encode_command"]
