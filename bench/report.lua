-- wrk script for bench/: an optional POST body (BODY_BYTES), a new connection per request (NEW_CONNECTIONS=1),
-- and one JSON line with the summary.
local size = tonumber(os.getenv("BODY_BYTES") or "0")
if os.getenv("NEW_CONNECTIONS") == "1" then
  wrk.headers["Connection"] = "close"
end
if size > 0 then
  wrk.method = "POST"
  wrk.body = string.rep("b", size)
  wrk.headers["Content-Type"] = "application/octet-stream"
end

done = function(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    'RESULT {"requests": %d, "seconds": %f, "bytes": %d, "errors": %d, "non2xx": %d, "p50_ms": %f, "p99_ms": %f}\n',
    summary.requests, summary.duration / 1e6, summary.bytes,
    errors.connect + errors.read + errors.write + errors.timeout, errors.status,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
