-- Agents, calls, conversations and their messages.

CREATE TABLE agents (
    id            text PRIMARY KEY,
    name          text NOT NULL,
    agent_type    text NOT NULL DEFAULT 'voice',
    configuration jsonb NOT NULL DEFAULT '{}'::jsonb,
    is_default    boolean NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
-- At most one default agent.
CREATE UNIQUE INDEX agents_single_default ON agents (is_default) WHERE is_default;
-- Routing an inbound call by the dialled number: configuration->'phone_numbers' @> '["+1555..."]'.
CREATE INDEX agents_phone_numbers ON agents USING gin ((configuration -> 'phone_numbers'));

CREATE TABLE calls (
    call_id    text PRIMARY KEY,
    provider   text NOT NULL,
    direction  text NOT NULL DEFAULT 'inbound' CHECK (direction IN ('inbound', 'outbound')),
    caller     text,
    callee     text,
    status     text NOT NULL DEFAULT 'in-progress',
    started_at timestamptz NOT NULL DEFAULT now(),
    ended_at   timestamptz,
    duration_s double precision,
    metadata   jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX calls_started_at ON calls (started_at DESC);

-- One conversation per call; its id is the gateway's call id.
CREATE TABLE conversations (
    id         text PRIMARY KEY,
    call_id    text NOT NULL REFERENCES calls (call_id) ON DELETE CASCADE,
    agent_id   text REFERENCES agents (id) ON DELETE SET NULL,
    caller     text,
    callee     text,
    provider   text,
    status     text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'ended')),
    started_at timestamptz NOT NULL DEFAULT now(),
    ended_at   timestamptz,
    end_reason text,
    summary    text,
    metadata   jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX conversations_call_id ON conversations (call_id);
CREATE INDEX conversations_caller ON conversations (caller, started_at DESC);
CREATE INDEX conversations_active ON conversations (started_at) WHERE status = 'active';

-- A turn is one user row and one assistant row with the same turn_id; the unique key is what
-- makes a retried turn (same Idempotency-Key) impossible to store twice.
CREATE TABLE messages (
    id              bigserial PRIMARY KEY,
    conversation_id text NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    turn_id         text NOT NULL,
    role            text NOT NULL CHECK (role IN ('user', 'assistant')),
    content         text NOT NULL,
    actions         jsonb NOT NULL DEFAULT '[]'::jsonb,
    timings         jsonb NOT NULL DEFAULT '{}'::jsonb,
    metadata        jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT messages_turn_role UNIQUE (conversation_id, turn_id, role)
);
CREATE INDEX messages_conversation ON messages (conversation_id, id);
