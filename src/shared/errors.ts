// Errors with a stable code and the exit status the CLI uses for them (README "Exit codes", man page EXIT STATUS).

export class BgdlError extends Error {
  constructor(
    message: string,
    readonly exitCode: number,
    readonly code: string,
  ) {
    super(message);
    this.name = new.target.name;
  }
}

/** Bad usage or bad input; nothing was changed. Exit 2. */
export class UsageError extends BgdlError {
  constructor(message: string, code = 'E_USAGE') {
    super(message, 2, code);
  }
}

/** A named task or session does not exist. Exit 3. */
export class NotFoundError extends BgdlError {
  constructor(message: string, code = 'E_NOT_FOUND') {
    super(message, 3, code);
  }
}

/** The store cannot be opened or is corrupt. Exit 4. */
export class StoreError extends BgdlError {
  constructor(message: string, code = 'E_STORE') {
    super(message, 4, code);
  }
}

/** A task the command waited on failed (or the wait timed out). Exit 1. */
export class WaitFailedError extends BgdlError {
  constructor(message: string, code = 'E_TASK_FAILED') {
    super(message, 1, code);
  }
}
