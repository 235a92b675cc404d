"""The Lua script behind `scope: redis` rate limits: every limit of one
route decided atomically in one EVALSHA, with Redis's clock.

    EVALSHA sha N key1 .. keyN  kind1 a1 b1  ..  kindN aN bN

One key per limit. kind "t" (token bucket): a = emission interval in integer
nanoseconds (1e9 * per / requests, rounded down, so never below the
configured rate: 3,000/s is 333,333 ns, one extra request per 3e5 s), b =
burst. kind "w" (sliding window): a = N requests, b = the window in
microseconds.

The same algorithms as the shared-memory limits (fastgw/_native/ratelimit.pyx):
GCRA for the token bucket, the sliding-window counter for windows; the same
answer fields; the same "most restrictive answers" rule. All limits are
computed first and written only when every one allows, so a denial by one
limit consumes nothing from the others (no refund step needed: the script is
atomic).

Clock: `TIME` inside the script, so gateways whose clocks disagree still
share one timeline. Lua numbers are doubles (exact integers below 2^53): a
token bucket stores "SEC TAT" where TAT is nanoseconds relative to second
SEC, rebased to the current second on every call, so the numbers stay small
(about the bucket's span) instead of ~1.8e18 ns since the epoch; a window
stores "WINDOW CUR PREV" and works in microseconds since the epoch (~1.8e15).
Numbers are written with %.0f: Lua's tostring keeps only 14 digits.

Eviction: each key expires (PX) when its state becomes idle: a token bucket
when it would be full again, a window when both its counts have expired. A
flood of distinct keys therefore costs memory only for as long as each key
matters.

Reply: {allowed 0/1, limit, remaining, reset_ns, retry_after_ns, position}
for the most restrictive limit (a denying one beats an allowing one; among
denials the longest retry_after; among allows the lowest remaining).
"""

SOURCE = r"""
pcall(redis.replicate_commands)  -- Redis < 5: allow writes after TIME (a no-op since 5)
local t = redis.call('TIME')
local sec = tonumber(t[1])
local usec = tonumber(t[2])
local now_ns = usec * 1000            -- within second `sec`
local now_us = sec * 1000000 + usec   -- since the epoch
local n = #KEYS

local function window_wait(prev, cur, elapsed, width, target)
  -- microseconds from now until prev*(W-e)/W + cur <= target
  if target < 0 then target = 0 end
  if cur <= target then
    if prev <= 0 or prev * (width - elapsed) <= (target - cur) * width then return 0 end
    return math.ceil(width * (1 - (target - cur) / prev) - elapsed)
  end
  return math.ceil(width - elapsed + width * (1 - target / cur))
end

local allowed_all = true
local out = {}     -- per limit: {allowed, limit, remaining, reset_ns, retry_ns, value, px}
for i = 1, n do
  local kind = ARGV[3 * i - 2]
  local a = tonumber(ARGV[3 * i - 1])
  local b = tonumber(ARGV[3 * i])
  local state = redis.call('GET', KEYS[i])
  local r
  if kind == 't' then
    local interval, burst = a, b
    local tolerance = (burst - 1) * interval
    local tat = now_ns
    if state then
      local base, rel = string.match(state, '^(%-?%d+) (%-?%d+)$')
      if base then
        tat = tonumber(rel) + (tonumber(base) - sec) * 1000000000
        if tat < now_ns then tat = now_ns end
      end
    end
    if now_ns < tat - tolerance then
      r = {0, burst, 0, tat - now_ns, tat - tolerance - now_ns}
    else
      local new_tat = tat + interval
      r = {1, burst, math.floor((now_ns + tolerance + interval - new_tat) / interval), new_tat - now_ns, 0,
           sec .. ' ' .. string.format('%.0f', new_tat), math.ceil((new_tat - now_ns) / 1000000)}
    end
  else
    local limit, width = a, b
    local number = math.floor(now_us / width)
    if number * width > now_us then number = number - 1 end
    if (number + 1) * width <= now_us then number = number + 1 end
    local elapsed = now_us - number * width
    local cur, prev = 0, 0
    if state then
      local w, c, p = string.match(state, '^(%d+) (%d+) (%d+)$')
      if w then
        w = tonumber(w)
        if w == number then
          cur, prev = tonumber(c), tonumber(p)
        elseif w == number - 1 then
          prev = tonumber(c)
        end
      end
    end
    local estimate = prev * (width - elapsed) / width + cur
    if estimate + 1 > limit then
      local wait = window_wait(prev, cur, elapsed, width, limit - 1)
      if wait < 1 then wait = 1 end
      r = {0, limit, 0, wait * 1000, wait * 1000}
    else
      cur = cur + 1
      local remaining = math.floor(limit - (estimate + 1))
      if remaining < 0 then remaining = 0 end
      local reset = window_wait(prev, cur, elapsed, width, limit - remaining - 1)
      r = {1, limit, remaining, reset * 1000, 0,
           string.format('%.0f %d %d', number, cur, prev),
           math.ceil(((number + 2) * width - now_us) / 1000)}
    end
  end
  if r[1] == 0 then allowed_all = false end
  out[i] = r
end

local worst = 0
for i = 1, n do
  local r = out[i]
  if worst == 0 then
    worst = i
  elseif not allowed_all then
    local w = out[worst]
    if r[1] == 0 and (w[1] == 1 or r[5] > w[5]) then worst = i end
  elseif r[3] < out[worst][3] then
    worst = i
  end
end
if allowed_all then
  for i = 1, n do
    redis.call('SET', KEYS[i], out[i][6], 'PX', out[i][7])
  end
end
local w = out[worst]
return {w[1], w[2], w[3], w[4], w[5], worst - 1}
"""
