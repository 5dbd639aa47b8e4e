-- wrk script: prints one machine-readable summary line at the end of a run.
-- Only done() is defined, so wrk keeps its fast path (no per-request Lua).
-- "status" counts responses with a status >= 400 (wrk's definition of a
-- non-2xx/3xx answer); the other counters are socket errors.
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"bytes":%d,"duration_us":%d,' ..
    '"err_connect":%d,"err_read":%d,"err_write":%d,"err_status":%d,"err_timeout":%d,' ..
    '"lat_mean_us":%.3f,"lat_stdev_us":%.3f,"lat_p50_us":%d,"lat_p99_us":%d,"lat_max_us":%d}\n',
    summary.requests, summary.bytes, summary.duration,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.stdev, latency:percentile(50), latency:percentile(99),
    latency.max))
end
