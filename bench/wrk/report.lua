-- wrk script: plain GET (the URL given on the command line); prints one
-- machine-readable summary line for bench/wrk_scenarios.sh.
-- status_err counts responses with status >= 400 (wrk's own counter);
-- connect/read/write/timeout are socket errors.
-- Usage: wrk -t1 -c64 -d10s --latency -s bench/wrk/report.lua http://127.0.0.1:PORT/
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("BENCH requests=%d duration_us=%d bytes=%d status_err=%d connect=%d read=%d write=%d timeout=%d p50_us=%d p90_us=%d p99_us=%d\n",
    summary.requests, summary.duration, summary.bytes, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99)))
end
