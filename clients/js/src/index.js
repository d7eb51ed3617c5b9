export { Kuda } from "./kuda.js";
export { KudaError } from "./errors.js";
export { memoryCursorStore, localStorageCursorStore, asyncStorageCursorStore } from "./cursors.js";
export { Backoff } from "./backoff.js";
export { tokenLifetime } from "./jwt.js";
