-- wrk script: POST a distinct pre-minted prompt token per request and count statuses.
-- TOKENS_FILE holds one /p/<token> path per line; thread i takes lines i, i+n, i+2n, ...
local threads = {}
local counter = 1

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  paths = {}
  local n, k = tonumber(os.getenv("WRK_THREADS") or "2"), 0
  for line in io.lines(os.getenv("TOKENS_FILE")) do
    k = k + 1
    if (k - id) % n == 0 then paths[#paths + 1] = line end
  end
  idx, c303, cother = 0, 0, 0
  body = os.getenv("POST_BODY") or "rating=4&comment=fine"
end

function request()
  idx = idx + 1
  local path = paths[idx] or os.getenv("POST_PATH") or "/"
  return wrk.format("POST", path, {["Content-Type"] = "application/x-www-form-urlencoded"}, body)
end

function response(status, headers, body)
  if status == 303 then c303 = c303 + 1 else cother = cother + 1 end
end

function done(summary, latency, requests)
  local a, b, used = 0, 0, 0
  for _, t in ipairs(threads) do
    a = a + t:get("c303"); b = b + t:get("cother"); used = math.max(used, t:get("idx"))
  end
  io.write(string.format("STATUS303 %d OTHER %d MAXIDX %d\n", a, b, used))
end
