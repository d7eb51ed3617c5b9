/** An error from the server (`{"type":"error"}` frame or REST error body) or from the client itself. */
export class KudaError extends Error {
  /**
   * @param {string} code e.g. "forbidden", "not_found", "timeout", "closed", "unauthorized"
   * @param {string} message
   * @param {{status?: number, details?: unknown, retryAfterS?: number}} [extra]
   */
  constructor(code, message, extra = {}) {
    super(message);
    this.name = "KudaError";
    this.code = code;
    this.status = extra.status;
    this.details = extra.details;
    this.retryAfterS = extra.retryAfterS;
  }
}
