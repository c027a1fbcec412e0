-- wrk script for `make bench` (tools/bench.py).
-- Arguments: METHOD BODY_FILE CODES_FILE THREADS ("-" for no file).
-- The body may hold "{code}", replaced per request by the next line of
-- CODES_FILE; each wrk thread takes every THREADS-th line, so no code is sent
-- twice (POST /token consumes them). done() prints one JSON line for bench.py.

local thread_count = 0

function setup(thread)
  thread:set("index", thread_count)
  thread_count = thread_count + 1
end

local function read_file(path)
  local handle = assert(io.open(path, "rb"))
  local text = handle:read("*a")
  handle:close()
  return text
end

local static_request = nil
local body_template = nil
local codes = {}
local next_code = 1

function init(args)
  wrk.method = args[1]
  if args[2] ~= "-" then
    wrk.body = read_file(args[2])
  end
  if args[3] == "-" then
    static_request = wrk.format()
    return
  end
  body_template = wrk.body
  local threads = tonumber(args[4])
  local line_number = 0
  for line in io.lines(args[3]) do
    if line_number % threads == index then
      codes[#codes + 1] = line
    end
    line_number = line_number + 1
  end
end

function request()
  if static_request then
    return static_request
  end
  -- Past the end of the list the codes repeat: the server then answers 400,
  -- which wrk counts as a non-2xx response and bench.py reports.
  local code = codes[next_code]
  next_code = next_code % #codes + 1
  return wrk.format(nil, nil, nil, (body_template:gsub("{code}", code)))
end

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    'BENCH {"requests": %d, "duration_us": %d, "status": %d, "connect": %d, '
      .. '"read": %d, "write": %d, "timeout": %d}\n',
    summary.requests, summary.duration, errors.status, errors.connect,
    errors.read, errors.write, errors.timeout))
end
