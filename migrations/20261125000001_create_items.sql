-- Items, the example resource. Valid for SQLite and PostgreSQL alike: ids are UUIDv7
-- strings made by the application (no vendor-specific sequences), times are Unix
-- milliseconds. IF NOT EXISTS keeps a re-run harmless.
CREATE TABLE IF NOT EXISTS items (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('book', 'tool', 'other')),
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- Names are unique, so a duplicate is a conflict (409) rather than a silent twin.
CREATE UNIQUE INDEX IF NOT EXISTS items_name_unique ON items (name);
