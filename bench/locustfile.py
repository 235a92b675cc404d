"""Locust load profile for fastgw: the three request kinds of the wrk scenarios
(small GET, POST with a 1 KiB body, 1 MiB GET) from FastHttpUser clients, for a
mixed, user-shaped load with per-request statistics (wrk gives the ceilings;
locust, a few hundred to a few thousand req/s per core, gives the shape).

Needs: locust (pip install 'fastgw[bench]' or pip install locust) and a fastgw
in front of an upstream that serves GET /, GET /big and POST /echo, e.g. the
nginx of bench/wrk_scenarios.sh or bench/upstream.py:

    python3 bench/upstream.py --port 19101 &                      # prints READY 19101
    bench/run_features.sh 19102 127.0.0.1:19101 &                 # fastgw, features config
    locust -f bench/locustfile.py --headless -u 50 -r 50 -t 15s --host http://127.0.0.1:19102

The exact headless command (any port; -t bounds the run):
    locust -f bench/locustfile.py --headless -u 50 -r 50 -t 15s --host http://127.0.0.1:PORT
Add `--csv bench/out/locust` for CSV statistics (bench/out/ is git-ignored).
Each response is checked: status 200 and the expected body (size for /big), so
a wrong answer counts as a failure in locust's table, not only a non-2xx one.
"""
from locust import FastHttpUser, constant, task

SMALL_BODY = b"hello world\n"
POST_BODY = b"a" * 1024
BIG_SIZE = 1024 * 1024


class GatewayUser(FastHttpUser):
    # No think time: each user sends its next request as soon as the last one
    # is answered, like a keep-alive client of an API.
    wait_time = constant(0)
    connection_timeout = 5.0
    network_timeout = 10.0

    @task(10)
    def small_get(self):
        with self.client.get("/", name="S1 GET /", catch_response=True) as resp:
            if resp.status_code != 200 or resp.content != SMALL_BODY:
                resp.failure(f"status {resp.status_code}, body {resp.content[:60]!r}")

    @task(5)
    def post_1k(self):
        with self.client.post("/echo", data=POST_BODY, name="S2 POST /echo 1 KiB",
                              headers={"Content-Type": "application/octet-stream"},
                              catch_response=True) as resp:
            if resp.status_code != 200 or resp.content != b"ok\n":
                resp.failure(f"status {resp.status_code}, body {resp.content[:60]!r}")

    @task(1)
    def big_get(self):
        with self.client.get("/big", name="S3 GET /big 1 MiB", catch_response=True) as resp:
            if resp.status_code != 200 or len(resp.content or b"") != BIG_SIZE:
                resp.failure(f"status {resp.status_code}, {len(resp.content or b'')} bytes")
