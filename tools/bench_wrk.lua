-- wrk script for `make bench` (tools/bench.py).
-- Arguments: METHOD BODY_FILE CODES_FILE THREADS EXPECTED ("-" for no file;
-- EXPECTED: the status a working server answers).
-- The body may hold "{code}", replaced per request by the next line of
-- CODES_FILE; each wrk thread takes every THREADS-th line, so no code is sent
-- twice (POST /token consumes them). Every answer is counted by its status,
-- and each thread keeps the first answer other than EXPECTED (status and the
-- start of its body), so that a failure can be told from another. done()
-- prints one JSON line for bench.py.

local threads = {}
-- Characters of a body kept.
local BODY_KEPT = 300

function setup(thread)
  thread:set("index", #threads)
  threads[#threads + 1] = thread
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
-- Per thread: answers by status, requests sent with a code, the codes it
-- holds, and the first answer other than the expected one.
statuses = {}
sent = 0
code_count = 0
first_status = 0
first_body = ""
local expected = 200

function init(args)
  wrk.method = args[1]
  expected = tonumber(args[5])
  if args[2] ~= "-" then
    wrk.body = read_file(args[2])
  end
  if args[3] == "-" then
    static_request = wrk.format()
    return
  end
  body_template = wrk.body
  local thread_count = tonumber(args[4])
  local line_number = 0
  for line in io.lines(args[3]) do
    if line_number % thread_count == index then
      codes[#codes + 1] = line
    end
    line_number = line_number + 1
  end
  code_count = #codes
end

function request()
  if static_request then
    return static_request
  end
  -- Past the end of the list the codes repeat: the server then refuses
  -- them, and bench.py reports both the answers and how many were repeats.
  local code = codes[next_code]
  sent = sent + 1
  next_code = next_code % #codes + 1
  return wrk.format(nil, nil, nil, (body_template:gsub("{code}", code)))
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  if status ~= expected and first_status == 0 then
    first_status = status
    first_body = string.sub(body or "", 1, BODY_KEPT)
  end
end

local function json_string(text)
  local escaped = text:gsub('[%c"\\\128-\255]', function(c)
    if c == '"' or c == "\\" then
      return "\\" .. c
    end
    return string.format("\\u%04x", string.byte(c))
  end)
  return '"' .. escaped .. '"'
end

function done(summary, latency, requests)
  local errors = summary.errors
  local totals = {}
  local repeats = 0
  local answers = {}
  local first = nil
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses")) do
      totals[status] = (totals[status] or 0) + count
    end
    repeats = repeats + math.max(0, thread:get("sent") - thread:get("code_count"))
    local status = thread:get("first_status")
    if status ~= 0 and first == nil then
      first = { status, thread:get("first_body") }
    end
  end
  for status, count in pairs(totals) do
    answers[#answers + 1] = string.format('"%d": %d', status, count)
  end
  io.write(string.format(
    'BENCH {"requests": %d, "duration_us": %d, "status": %d, "connect": %d, '
      .. '"read": %d, "write": %d, "timeout": %d, "statuses": {%s}, '
      .. '"repeats": %d, "first_status": %d, "first_body": %s}\n',
    summary.requests, summary.duration, errors.status, errors.connect,
    errors.read, errors.write, errors.timeout, table.concat(answers, ", "),
    repeats, first and first[1] or 0, json_string(first and first[2] or "")))
end
