-- Orders, the guide's resource. Portable: text ids made by the application, no sequence.
CREATE TABLE IF NOT EXISTS orders (
    id TEXT PRIMARY KEY,
    item TEXT NOT NULL,
    quantity BIGINT NOT NULL CHECK (quantity > 0),
    kind TEXT NOT NULL
);
