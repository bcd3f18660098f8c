-- POST the same JSON body on every request, then print one machine-readable summary line.
-- Used by benchmarks/proxy_overhead.py:
--   wrk -t1 -c8 -d5s -s benchmarks/wrk_post.lua URL -- BODY_FILE [BEARER_TOKEN]
-- The summary line starts with "WRK_JSON " and holds counts, socket and status errors, and the
-- latency distribution in microseconds.

function init(args)
  local file = assert(io.open(args[1], "rb"), "cannot open the body file " .. tostring(args[1]))
  wrk.body = file:read("*a")
  file:close()
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  if args[2] and args[2] ~= "" then
    wrk.headers["Authorization"] = "Bearer " .. args[2]
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"min":%d,"mean":%.1f,"max":%d,"p50":%d,"p90":%d,"p99":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.max,
    latency:percentile(50), latency:percentile(90), latency:percentile(99)))
end
