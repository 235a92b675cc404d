-- wrk script: POST with a 1 KiB body (Content-Length), same summary line as
-- report.lua. Usage: wrk -t1 -c64 -d10s --latency -s bench/wrk/post1k.lua http://127.0.0.1:PORT/echo
wrk.method = "POST"
wrk.body = string.rep("a", 1024)
wrk.headers["Content-Type"] = "application/octet-stream"

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH requests=%d duration_us=%d bytes=%d status_err=%d connect=%d read=%d write=%d timeout=%d p50_us=%d p90_us=%d p99_us=%d\n",
    summary.requests, summary.duration, summary.bytes, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99)))
end
