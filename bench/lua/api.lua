-- wrk script for voltpay's API and the database ceiling.
--
-- Arguments (after "--"): mode, data file, number of wrk threads.
--   pay        lines "token billId": POST /api/Vend/{billId}/pay, each bill once
--   add-funds  lines "token walletId": POST /api/wallets/{walletId}/add-funds
--   verify     lines "token": POST /api/electricity/verify
--   lists      lines "token walletId": GET /api/bills and
--              GET /api/wallets/{walletId}/transactions in turn
-- A fourth argument "statuses" counts the answers 429 in "too_many" (off by
-- default: a response() callback costs wrk time on every answer).
-- Thread k of n takes lines k, k+n, k+2n...; a thread that runs out of lines
-- starts again from its first one and counts it in "wrapped" (for pay, a
-- wrapped request hits a bill already paid: the run needed more bills).

local threads = {}
local counter = 0

function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  mode = args[1]
  local path = args[2]
  local nthreads = tonumber(args[3])
  items = {}
  local index = 0
  for line in io.lines(path) do
    if index % nthreads == tid then
      local token, id = line:match("^(%S+)%s*(%S*)")
      items[#items + 1] = { token, id }
    end
    index = index + 1
  end
  position = 0
  wrapped = 0
  meter = 45000000000 + tid * 1000000
  sent = 0
  too_many = 0
  if args[4] == "statuses" then
    response = count_statuses
  end
end

function count_statuses(status, headers, body)
  if status == 429 then
    too_many = too_many + 1
  end
end

local funds_body = '{"amount":"10.00"}'

function request()
  position = position + 1
  if position > #items then
    position = 1
    wrapped = wrapped + 1
  end
  local item = items[position]
  local headers = { ["Authorization"] = "Bearer " .. item[1] }
  if mode == "pay" then
    return wrk.format("POST", "/api/Vend/" .. item[2] .. "/pay", headers, nil)
  end
  if mode == "lists" then
    sent = sent + 1
    if sent % 2 == 0 then
      return wrk.format("GET", "/api/bills", headers, nil)
    end
    return wrk.format("GET", "/api/wallets/" .. item[2] .. "/transactions", headers, nil)
  end
  headers["Content-Type"] = "application/json"
  if mode == "add-funds" then
    return wrk.format("POST", "/api/wallets/" .. item[2] .. "/add-funds", headers, funds_body)
  end
  meter = meter + 1
  local body = string.format('{"meterNumber":"%d","amount":"50.00"}', meter)
  return wrk.format("POST", "/api/electricity/verify", headers, body)
end

function done(summary, latency, requests)
  local total_wrapped = 0
  local total_too_many = 0
  for _, thread in ipairs(threads) do
    total_wrapped = total_wrapped + (thread:get("wrapped") or 0)
    total_too_many = total_too_many + (thread:get("too_many") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
    '"max_us":%d,"mean_us":%.1f,"connect_errors":%d,"read_errors":%d,"write_errors":%d,' ..
    '"status_errors":%d,"timeouts":%d,"wrapped":%d,"too_many":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean, e.connect, e.read, e.write,
    e.status, e.timeout, total_wrapped, total_too_many))
end
