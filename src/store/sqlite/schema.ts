// Schema migrations by version number (PRAGMA user_version). Each entry upgrades from the previous
// version; a store written by a newer bgdl is refused rather than downgraded.

/** The worker lease is the one row of the `lease` table, with this id. */
export const LEASE_ID = 1;

export const MIGRATIONS: string[] = [
  // 1: sessions, tasks, events, the worker lease.
  `
  CREATE TABLE sessions (
    name TEXT PRIMARY KEY,
    hook TEXT,
    launch_events INTEGER NOT NULL DEFAULT 1,
    discretionary INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    hook_failures INTEGER NOT NULL DEFAULT 0,
    hook_next_at INTEGER,
    hook_last_error TEXT,
    hook_last_run_at INTEGER,
    hook_runs INTEGER NOT NULL DEFAULT 0,
    rl_count INTEGER NOT NULL DEFAULT 0,
    rl_last_run_at INTEGER
  );
  CREATE TABLE tasks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session TEXT NOT NULL REFERENCES sessions(name),
    kind TEXT NOT NULL,
    url TEXT NOT NULL,
    final_url TEXT,
    method TEXT NOT NULL,
    headers TEXT NOT NULL,
    output TEXT,
    output_fixed INTEGER NOT NULL,
    dir TEXT NOT NULL,
    upload_file TEXT,
    upload_size INTEGER,
    state TEXT NOT NULL,
    wait_reason TEXT,
    wait_detail TEXT,
    not_before INTEGER,
    begin_at INTEGER,
    discretionary INTEGER NOT NULL,
    priority INTEGER NOT NULL,
    expect_send INTEGER,
    expect_receive INTEGER,
    sha256_expected TEXT,
    sha256 TEXT,
    bytes_received INTEGER NOT NULL DEFAULT 0,
    bytes_expected INTEGER,
    bytes_sent INTEGER NOT NULL DEFAULT 0,
    http_status INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    error_code TEXT,
    error_message TEXT,
    etag TEXT,
    last_modified TEXT,
    resume_offset INTEGER NOT NULL DEFAULT 0,
    response_body TEXT,
    insecure INTEGER NOT NULL DEFAULT 0,
    ca_file TEXT,
    allow_downgrade INTEGER NOT NULL DEFAULT 0,
    from_hook INTEGER NOT NULL DEFAULT 0,
    speed INTEGER,
    created_at INTEGER NOT NULL,
    timeout_from INTEGER NOT NULL,
    started_at INTEGER,
    finished_at INTEGER
  );
  CREATE INDEX tasks_by_state ON tasks(state, priority DESC, id);
  CREATE INDEX tasks_by_session ON tasks(session, id);
  CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    session TEXT NOT NULL,
    task_id INTEGER NOT NULL,
    type TEXT NOT NULL,
    data TEXT NOT NULL,
    at INTEGER NOT NULL,
    delivered_at INTEGER
  );
  CREATE INDEX events_undelivered ON events(session, delivered_at, id);
  CREATE TABLE lease (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    pid INTEGER NOT NULL,
    host TEXT NOT NULL,
    heartbeat INTEGER NOT NULL,
    started_at INTEGER NOT NULL
  );
  `,
  // 2: fencing tokens and part-file ownership; per-task limits, proxies and credentials files; batch
  // options (skip / if-changed / checksums / attempts); how a completed task ended (outcome); the
  // worker lease's generation.
  `
  ALTER TABLE tasks ADD COLUMN claim INTEGER NOT NULL DEFAULT 0;
  ALTER TABLE tasks ADD COLUMN part_path TEXT;
  ALTER TABLE tasks ADD COLUMN part_id TEXT;
  ALTER TABLE tasks ADD COLUMN part_boot TEXT;
  ALTER TABLE tasks ADD COLUMN max_size INTEGER;
  ALTER TABLE tasks ADD COLUMN proxy TEXT;
  ALTER TABLE tasks ADD COLUMN netrc_file TEXT;
  ALTER TABLE tasks ADD COLUMN cookies_file TEXT;
  ALTER TABLE tasks ADD COLUMN skip_existing INTEGER NOT NULL DEFAULT 0;
  ALTER TABLE tasks ADD COLUMN if_changed INTEGER NOT NULL DEFAULT 0;
  ALTER TABLE tasks ADD COLUMN checksums TEXT;
  ALTER TABLE tasks ADD COLUMN max_attempts INTEGER;
  ALTER TABLE tasks ADD COLUMN outcome TEXT;
  ALTER TABLE lease ADD COLUMN token INTEGER NOT NULL DEFAULT 0;
  `,
  // 3: --if-changed looks up the latest completed download of an output (or of a URL into a
  // directory) for every attempt: indexes over completed tasks only, so queued work pays nothing.
  `
  CREATE INDEX tasks_done_by_output ON tasks(output) WHERE state = 'completed';
  CREATE INDEX tasks_done_by_url ON tasks(url, dir) WHERE state = 'completed';
  `,
  // 4: the protocol a transfer's final response came over (HTTP/1.1, HTTP/2); bandwidth limits of a
  // task and of a session (bytes per second, NULL: none).
  `
  ALTER TABLE tasks ADD COLUMN protocol TEXT;
  ALTER TABLE tasks ADD COLUMN limit_rate INTEGER;
  ALTER TABLE sessions ADD COLUMN limit_rate INTEGER;
  `,
  // 5: --split: connections for one file (NULL: the config's split, 0: auto), and the segment table of
  // a split download's partial file (JSON: which bytes of each segment are durable).
  `
  ALTER TABLE tasks ADD COLUMN split INTEGER;
  ALTER TABLE tasks ADD COLUMN segments TEXT;
  `,
];

export const SCHEMA_VERSION = MIGRATIONS.length;
