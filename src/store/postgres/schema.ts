// The PostgreSQL schema, by version number (kept in bgdl_meta). Each entry upgrades from the
// previous version, applied under an advisory lock on first use; a newer schema is refused. The
// columns are those of the SQLite store (so both decode rows the same way), plus what many workers
// sharing one store need: per-task lease owners, origins and split downloads' extra connections for
// perHost across the cluster, hook leases, and the worker a task avoids (one that could not write its directory).

export const PG_MIGRATIONS: string[] = [
  // 1: everything of SQLite's schema 4, and the cluster's columns.
  `
  CREATE TABLE sessions (
    name TEXT PRIMARY KEY,
    hook TEXT,
    launch_events INTEGER NOT NULL DEFAULT 1,
    discretionary INTEGER NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    hook_failures INTEGER NOT NULL DEFAULT 0,
    hook_next_at BIGINT,
    hook_last_error TEXT,
    hook_last_run_at BIGINT,
    hook_runs INTEGER NOT NULL DEFAULT 0,
    rl_count INTEGER NOT NULL DEFAULT 0,
    rl_last_run_at BIGINT,
    limit_rate BIGINT,
    hook_owner TEXT,
    hook_owner_token BIGINT
  );
  CREATE TABLE tasks (
    id BIGSERIAL PRIMARY KEY,
    session TEXT NOT NULL REFERENCES sessions(name),
    kind TEXT NOT NULL,
    url TEXT NOT NULL,
    origin TEXT NOT NULL,
    final_url TEXT,
    method TEXT NOT NULL,
    headers TEXT NOT NULL,
    output TEXT,
    output_fixed INTEGER NOT NULL,
    dir TEXT NOT NULL,
    upload_file TEXT,
    upload_size BIGINT,
    state TEXT NOT NULL,
    wait_reason TEXT,
    wait_detail TEXT,
    not_before BIGINT,
    begin_at BIGINT,
    discretionary INTEGER NOT NULL,
    priority INTEGER NOT NULL,
    expect_send BIGINT,
    expect_receive BIGINT,
    sha256_expected TEXT,
    sha256 TEXT,
    bytes_received BIGINT NOT NULL DEFAULT 0,
    bytes_expected BIGINT,
    bytes_sent BIGINT NOT NULL DEFAULT 0,
    http_status INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    error_code TEXT,
    error_message TEXT,
    etag TEXT,
    last_modified TEXT,
    resume_offset BIGINT NOT NULL DEFAULT 0,
    response_body TEXT,
    insecure INTEGER NOT NULL DEFAULT 0,
    ca_file TEXT,
    allow_downgrade INTEGER NOT NULL DEFAULT 0,
    from_hook INTEGER NOT NULL DEFAULT 0,
    speed BIGINT,
    created_at BIGINT NOT NULL,
    timeout_from BIGINT NOT NULL,
    started_at BIGINT,
    finished_at BIGINT,
    claim BIGINT NOT NULL DEFAULT 0,
    part_path TEXT,
    part_id TEXT,
    part_boot TEXT,
    max_size BIGINT,
    proxy TEXT,
    netrc_file TEXT,
    cookies_file TEXT,
    skip_existing INTEGER NOT NULL DEFAULT 0,
    if_changed INTEGER NOT NULL DEFAULT 0,
    checksums TEXT,
    max_attempts INTEGER,
    outcome TEXT,
    protocol TEXT,
    limit_rate BIGINT,
    owner TEXT,
    owner_token BIGINT,
    avoid TEXT
  );
  CREATE INDEX tasks_by_state ON tasks(state, priority DESC, id);
  CREATE INDEX tasks_by_session ON tasks(session, id);
  CREATE INDEX tasks_running ON tasks(owner, origin) WHERE state = 'running';
  CREATE INDEX tasks_live_outputs ON tasks(dir, output) WHERE state IN ('queued', 'running', 'paused');
  CREATE INDEX tasks_done_by_output ON tasks(output) WHERE state = 'completed';
  CREATE INDEX tasks_done_by_url ON tasks(url, dir) WHERE state = 'completed';
  CREATE TABLE events (
    id BIGSERIAL PRIMARY KEY,
    session TEXT NOT NULL,
    task_id BIGINT NOT NULL,
    type TEXT NOT NULL,
    data TEXT NOT NULL,
    at BIGINT NOT NULL,
    delivered_at BIGINT
  );
  CREATE INDEX events_undelivered ON events(session, delivered_at, id);
  CREATE TABLE workers (
    id TEXT PRIMARY KEY,
    pid INTEGER NOT NULL,
    host TEXT NOT NULL,
    boot TEXT,
    heartbeat BIGINT NOT NULL,
    started_at BIGINT NOT NULL,
    token BIGINT NOT NULL DEFAULT 0
  );
  `,
  // 2: --split: connections for one file (NULL: the config's split, 0: auto), and the segment table of
  // a split download's partial file.
  `
  ALTER TABLE tasks ADD COLUMN split INTEGER;
  ALTER TABLE tasks ADD COLUMN segments TEXT;
  `,
  // 3: a running split download's connections beyond its first, so that perHost counts them across
  // the cluster (reset by each claim).
  `
  ALTER TABLE tasks ADD COLUMN extra_connections INTEGER NOT NULL DEFAULT 0;
  `,
];

export const PG_SCHEMA_VERSION = PG_MIGRATIONS.length;
