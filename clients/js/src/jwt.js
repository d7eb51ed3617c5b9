const B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

function base64UrlDecode(text) {
  let bits = 0;
  let value = 0;
  let out = "";
  for (const ch of text.replace(/=+$/, "")) {
    const index = B64.indexOf(ch === "+" ? "-" : ch === "/" ? "_" : ch);
    if (index < 0) throw new Error("not base64url");
    value = (value << 6) | index;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out += String.fromCharCode((value >> bits) & 0xff);
    }
  }
  // The payload is UTF-8 JSON; decode the bytes (percent-encoding trick works everywhere).
  return decodeURIComponent(out.replace(/[\x80-\xff]/g, (c) => "%" + c.charCodeAt(0).toString(16)));
}

/**
 * The lifetime of a JWT in milliseconds since the epoch, read without verifying it (the server
 * verifies; the client only plans its refresh). Undefined for anything that is not a JWT.
 * @param {string} token
 * @returns {{expMs: number, iatMs: number | undefined} | undefined}
 */
export function tokenLifetime(token) {
  const parts = typeof token === "string" ? token.split(".") : [];
  if (parts.length !== 3) return undefined;
  try {
    const claims = JSON.parse(base64UrlDecode(parts[1]));
    if (typeof claims.exp !== "number") return undefined;
    return {
      expMs: claims.exp * 1000,
      iatMs: typeof claims.iat === "number" ? claims.iat * 1000 : undefined,
    };
  } catch {
    return undefined;
  }
}
