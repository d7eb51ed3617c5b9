/** An error from the server (`{"type":"error"}` frame or REST error body) or from the client itself. */
export class KudaError extends Error {
  /**
   * @param {string} code e.g. "forbidden", "not_found", "timeout", "closed", "unauthorized"
   * @param {string} message
   * @param {{status?: number, details?: unknown, retryAfterS?: number, cause?: unknown}} [extra]
   */
  constructor(code, message, extra = {}) {
    super(message, extra.cause === undefined ? undefined : { cause: extra.cause });
    this.name = "KudaError";
    this.code = code;
    this.status = extra.status;
    this.details = extra.details;
    this.retryAfterS = extra.retryAfterS;
  }
}
