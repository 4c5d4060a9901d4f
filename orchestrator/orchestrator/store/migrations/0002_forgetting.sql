-- Forgetting a caller (DELETE /callers/{phone}/memory) and MEMORY_RETENTION_DAYS.
--
-- A forgotten or expired conversation keeps its row, anonymised: its transcript is deleted and its
-- number, summary and metadata erased, so the call still counts (agent, provider, status, times,
-- duration: what reconciling the providers' bills and the service's statistics need) but nothing
-- in it says who called or what was said. `forgotten_at` is also the tombstone a call still live
-- at that moment meets: no summary or memory is written for it afterwards, and what its remaining
-- turns stored is deleted when it ends.
ALTER TABLE conversations ADD COLUMN forgotten_at timestamptz;

-- Numbers stored before every service wrote E.164 (`15550002222`, `+1 (555) 000-2222`) are found
-- by their digits; the expressions must be written exactly so in the queries that use them.
CREATE INDEX conversations_caller_digits ON conversations (regexp_replace(caller, '[^0-9]', '', 'g'));
CREATE INDEX conversations_callee_digits ON conversations (regexp_replace(callee, '[^0-9]', '', 'g'));

-- Retention finds what is not yet erased, oldest first.
CREATE INDEX conversations_unerased ON conversations (started_at) WHERE forgotten_at IS NULL;
