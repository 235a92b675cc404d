-- wrk script for the CI smoke (bench/smoke.sh): plain GET that also counts
-- every response whose status is not 2xx (wrk itself only counts >= 400).
-- The per-response callback costs wrk some throughput: use it for checking,
-- not for the figures. Prints the same summary line as report.lua plus non2xx=N.
-- Usage: wrk -t1 -c32 -d3s --latency -s bench/wrk/count2xx.lua http://127.0.0.1:PORT/
local threads = {}

setup = function(thread)
  table.insert(threads, thread)
end

init = function(args)
  non2xx = 0
end

response = function(status, headers, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
  end
end

done = function(summary, latency, requests)
  local bad = 0
  for _, t in ipairs(threads) do
    bad = bad + (t:get("non2xx") or 0)
  end
  local e = summary.errors
  io.write(string.format("BENCH requests=%d duration_us=%d bytes=%d status_err=%d connect=%d read=%d write=%d timeout=%d p50_us=%d p90_us=%d p99_us=%d non2xx=%d\n",
    summary.requests, summary.duration, summary.bytes, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), bad))
end
