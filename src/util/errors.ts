// The error every shell (CLI, page, embedding code) shows as its message alone: the user's input
// (a flag, a file, a query parameter) was wrong, and the message says how.

/** An error the user caused (bad file, bad option): shown as one line, no stack. */
export class UserError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UserError';
  }
}
