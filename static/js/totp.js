// TOTP (RFC 6238) with HMAC-SHA1 (RFC 2104) over our own SHA-1 (FIPS 180-4): what the card page's live code
// is made of. Pure functions on Uint8Arrays; no browser API, so Node runs the same file in the tests.
//
// Why not WebCrypto: crypto.subtle exists only in secure contexts, and a card page opened on a shop's LAN
// address over plain http is not one. SHA-1 is fine here: HMAC-SHA1 is what RFC 6238 and every authenticator
// app use, and HMAC does not rest on SHA-1's collision resistance.
//
// The server's twin is app/domain/rotating_codes.py (`totp`); tests/test_card_code_scripts.py checks both
// against the RFC 2202 and RFC 6238 vectors and against each other.

const BLOCK_BYTES = 64;

/** The SHA-1 digest (20 bytes) of `bytes`. */
export function sha1(bytes) {
  const length = bytes.length;
  // The message, 0x80, zeros, then its length in bits as 64 bits big-endian: a whole number of 64-byte blocks.
  const padded = new Uint8Array(Math.ceil((length + 9) / BLOCK_BYTES) * BLOCK_BYTES);
  padded.set(bytes);
  padded[length] = 0x80;
  const view = new DataView(padded.buffer);
  view.setUint32(padded.length - 8, Math.floor(length / 0x20000000)); // (length * 8) / 2^32
  view.setUint32(padded.length - 4, (length * 8) >>> 0);

  const h = new Uint32Array([0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476, 0xc3d2e1f0]);
  const w = new Uint32Array(80);
  for (let block = 0; block < padded.length; block += BLOCK_BYTES) {
    for (let i = 0; i < 16; i += 1) w[i] = view.getUint32(block + i * 4);
    for (let i = 16; i < 80; i += 1) w[i] = rotl(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
    let [a, b, c, d, e] = h;
    for (let i = 0; i < 80; i += 1) {
      let f;
      let k;
      if (i < 20) {
        f = (b & c) | (~b & d);
        k = 0x5a827999;
      } else if (i < 40) {
        f = b ^ c ^ d;
        k = 0x6ed9eba1;
      } else if (i < 60) {
        f = (b & c) | (b & d) | (c & d);
        k = 0x8f1bbcdc;
      } else {
        f = b ^ c ^ d;
        k = 0xca62c1d6;
      }
      const t = (rotl(a, 5) + f + e + k + w[i]) >>> 0;
      e = d;
      d = c;
      c = rotl(b, 30);
      b = a;
      a = t;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
  }
  const digest = new Uint8Array(20);
  const out = new DataView(digest.buffer);
  h.forEach((word, i) => out.setUint32(i * 4, word));
  return digest;
}

function rotl(x, n) {
  return ((x << n) | (x >>> (32 - n))) >>> 0;
}

/** HMAC-SHA1 (RFC 2104) of `message` under `key`; both Uint8Arrays. */
export function hmacSha1(key, message) {
  const block = new Uint8Array(BLOCK_BYTES);
  block.set(key.length > BLOCK_BYTES ? sha1(key) : key);
  const inner = new Uint8Array(BLOCK_BYTES + message.length);
  const outer = new Uint8Array(BLOCK_BYTES + 20);
  for (let i = 0; i < BLOCK_BYTES; i += 1) {
    inner[i] = block[i] ^ 0x36;
    outer[i] = block[i] ^ 0x5c;
  }
  inner.set(message, BLOCK_BYTES);
  outer.set(sha1(inner), BLOCK_BYTES);
  return sha1(outer);
}

/** RFC 4226 HOTP of the counter `step` (RFC 6238's time step) with HMAC-SHA1, as `digits` decimal digits. */
export function totp(secret, step, digits = 6) {
  const counter = new Uint8Array(8);
  const view = new DataView(counter.buffer);
  view.setUint32(0, Math.floor(step / 0x100000000));
  view.setUint32(4, step >>> 0);
  const mac = hmacSha1(secret, counter);
  const offset = mac[19] & 0x0f;
  const number = new DataView(mac.buffer).getUint32(offset) & 0x7fffffff;
  return String(number % 10 ** digits).padStart(digits, "0");
}

/** The TOTP time step of a moment (milliseconds since the epoch): whole periods since the epoch. */
export function stepAt(milliseconds, periodSeconds) {
  return Math.floor(Math.floor(milliseconds / 1000) / periodSeconds);
}

/** Bytes from lower- or upper-case hex; throws on anything else. */
export function hexToBytes(hex) {
  if (typeof hex !== "string" || hex.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(hex)) {
    throw new Error("not a hex string");
  }
  const bytes = new Uint8Array(hex.length / 2);
  for (let i = 0; i < bytes.length; i += 1) bytes[i] = parseInt(hex.slice(i * 2, i * 2 + 2), 16);
  return bytes;
}
