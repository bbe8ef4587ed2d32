-- wrk script for benches/load.sh: each request is the next pre-signed, distinct delivery.
local deliveries = {}
local next_index = 1

function init(args)
  for line in io.lines(args[1]) do
    local tab = line:find("\t", 1, true)
    deliveries[#deliveries + 1] = wrk.format("POST", "/webhook", {
      ["Content-Type"] = "application/json",
      ["X-AISoule-Signature"] = line:sub(1, tab - 1),
    }, line:sub(tab + 1))
  end
end

function request()
  local r = deliveries[next_index]
  next_index = next_index % #deliveries + 1
  return r
end
