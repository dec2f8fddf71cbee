-- Argo CD health check for iam.vultr-operator.io/PolicyAttachment.
-- Healthy: Ready=True for the current generation (the grant is verified in Vultr).
-- Progressing: no status yet, a generation the operator has not observed, Ready=Unknown,
--   or Ready=False while attaching/detaching.
-- Degraded: Ready=False for any other reason (PolicyNotFound, UserNotFound, Forbidden,
--   ...): the message says why.
-- Suspended: paused (annotation iam.vultr-operator.io/paused: "true"; the operator says
--   so as Synced=False, reason Paused, or Ready=False Paused before the first attach):
--   the message says what is held and how to resume.
-- A failed last reconcile (Synced=False: ApiUnavailable, RateLimited, ...) never changes
-- the status above (a transient failure says nothing about the grant); it is appended
-- to the message.
-- Written for Argo CD's Lua 5.1 (gopher-lua); tested with lua5.4 by tests/chart.rs.
local hs = {}
local generation = nil
if obj.metadata ~= nil then
  generation = obj.metadata.generation
end

if obj.status == nil or obj.status.conditions == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report status"
  return hs
end

local ready = nil
local synced = nil
for _, condition in ipairs(obj.status.conditions) do
  if condition.type == "Ready" then
    ready = condition
  elseif condition.type == "Synced" then
    synced = condition
  end
end
local paused = nil
if synced ~= nil and synced.status == "False" and synced.reason == "Paused" then
  paused = synced
elseif ready ~= nil and ready.status == "False" and ready.reason == "Paused" then
  paused = ready
end
if paused ~= nil then
  hs.status = "Suspended"
  hs.message = "Paused: " .. (paused.message or "")
  return hs
end
if ready == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Ready condition"
  return hs
end

local observed = ready.observedGeneration
if observed == nil then
  observed = obj.status.observedGeneration
end
if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to observe generation " .. tostring(generation)
  return hs
end

local reason = ready.reason or ""
local message = ready.message or ""
local detail = reason
if message ~= "" then
  detail = reason .. ": " .. message
end
if synced ~= nil and synced.status == "False" then
  detail = detail .. " (last reconcile failed: " .. (synced.reason or "") .. ": " .. (synced.message or "") .. ")"
end

if ready.status == "True" then
  hs.status = "Healthy"
  hs.message = detail
elseif ready.status == "False" and (reason == "Attaching" or reason == "Detaching") then
  hs.status = "Progressing"
  hs.message = detail
elseif ready.status == "False" then
  hs.status = "Degraded"
  hs.message = detail
else
  hs.status = "Progressing"
  hs.message = "Ready is " .. tostring(ready.status) .. " " .. detail
end
return hs
