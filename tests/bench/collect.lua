-- wrk script for the ingest bench (tests/bench/ingest.py): POST /collect, a batch of fresh event ids per request.
--
-- wrk ... -s collect.lua URL -- TEMPLATE_FILE NONCE EVENTS_PER_BATCH "Name: value" ...
--
-- TEMPLATE_FILE holds the JSON body with %s in place of each event id
-- (tests/bench/payload.py writes it). An id is NONCE-THREAD-COUNTER-J, the
-- same shape as the Python load generator's, so no two requests of a run
-- (nor of two runs) share an id and the collector deduplicates nothing.
-- done() prints one line, BENCH_RESULT {json}, that the bench parses.

local threads = 0

function setup(thread)
  threads = threads + 1
  thread:set("thread_number", threads)
end

local template, nonce, size
local headers = {}
local counter = 0

function init(args)
  local file = assert(io.open(args[1], "r"))
  template = file:read("*a")
  file:close()
  nonce = args[2]
  size = tonumber(args[3])
  for i = 4, #args do
    local name, value = args[i]:match("^([^:]+):%s*(.*)$")
    headers[name] = value
  end
end

function request()
  counter = counter + 1
  local ids = {}
  for j = 1, size do
    ids[j] = nonce .. "-" .. thread_number .. "-" .. counter .. "-" .. j
  end
  return wrk.format("POST", nil, headers, string.format(template, unpack(ids)))
end

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,'
      .. '"p50_us":%d,"p99_us":%d}\n',
    summary.requests, summary.duration, errors.connect, errors.read, errors.write, errors.status, errors.timeout,
    latency:percentile(50), latency:percentile(99)))
end
