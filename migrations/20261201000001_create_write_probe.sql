-- One row that /api/health rewrites while writes are failing (storage full, read-only),
-- to see when they work again even when no request writes. babylon's own; no data of the
-- application's lives here.
CREATE TABLE IF NOT EXISTS babylon_write_probe (
    id INTEGER PRIMARY KEY,
    probed_at BIGINT NOT NULL
);

INSERT INTO babylon_write_probe (id, probed_at) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;
