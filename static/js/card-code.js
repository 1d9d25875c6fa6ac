// The card page's live code, for programs with rotating codes (app/domain/rotating_codes.py, docs/card-code.md).
//
// The QR holds  <signed card code> "." <slot> "." <TOTP>  and changes every period. This browser's secret and
// slot come once from POST <data-device-url> (with the page's CSRF token) and are kept in localStorage under
// the card's link token, so a reload does not register the browser again and an open page keeps working
// offline. Every code is computed here (static/js/totp.js), so the page itself holds no code a screenshot could
// reuse: the till takes each code once, and only within a period either side of its own clock.
//
// What the page gives, on <div id="live-code">: data-card-token, data-card-code (the current signed card code),
// data-period (seconds), data-device-url, data-device-slots (comma-separated slots the server still knows: a
// stored secret whose slot is missing was replaced, so a new one is asked for), data-server-time (ms, to
// correct a phone clock that is far off).
//
// State for tests, on the same element: data-state="loading" | "live" | "error", and once live data-code (the
// text in the QR shown), data-slot and data-step. The QR is <svg data-testid="live-qr">; the countdown is
// [data-testid=live-countdown-seconds].
//
// Importing this module touches no browser API unless the page has #live-code, so Node can test its exports.

import qrcode from "../vendor/qrcode-generator/qrcode.mjs";
import { hexToBytes, stepAt, totp } from "./totp.js";

const STORAGE_PREFIX = "loyalty-live-code:";
const QUIET_ZONE = 4; // modules of white around the symbol, as the QR standard asks
// A phone clock this far from the server's is corrected; nearer than that it is left alone (the till accepts a
// period either side, and the page's own download time would otherwise count as skew).
const CLOCK_SKEW_CORRECTED_MS = 5000;
const RETRY_MS = [2000, 5000, 10000, 30000];
const SVG = "http://www.w3.org/2000/svg";

/** The text a live code's QR holds. */
export function liveCodeText(cardCode, slot, value) {
  return `${cardCode}.${slot}.${value}`;
}

/** The live code a device shows at `milliseconds` (since the epoch), and the step it belongs to. */
export function liveCodeAt(cardCode, device, periodSeconds, milliseconds) {
  const step = stepAt(milliseconds, periodSeconds);
  return { step, text: liveCodeText(cardCode, device.slot, totp(hexToBytes(device.secret), step)) };
}

/** Seconds until the code after the one shown at `milliseconds` (1 to the period). */
export function secondsLeft(periodSeconds, milliseconds) {
  const periodMs = periodSeconds * 1000;
  return Math.ceil((periodMs - (milliseconds % periodMs)) / 1000);
}

/** The QR symbol for `text`: error correction M, alphanumeric mode (base32, digits and "." all belong to it). */
export function qrSymbol(text) {
  const qr = qrcode(0, "M");
  qr.addData(text, "Alphanumeric");
  qr.make();
  return { size: qr.getModuleCount(), isDark: (row, col) => qr.isDark(row, col), version: (qr.getModuleCount() - 17) / 4 };
}

/** An SVG path drawing the symbol's dark modules, one unit per module, offset by the quiet zone. */
export function qrPath(symbol) {
  const parts = [];
  for (let row = 0; row < symbol.size; row += 1) {
    for (let col = 0; col < symbol.size; col += 1) {
      if (symbol.isDark(row, col)) parts.push(`M${col + QUIET_ZONE} ${row + QUIET_ZONE}h1v1h-1z`);
    }
  }
  return parts.join("");
}

/** A clock offset to add to Date.now(): the server's time minus ours, when they are far apart; else 0. */
export function clockOffset(serverMs, localMs) {
  const skew = serverMs - localMs;
  return Number.isFinite(skew) && Math.abs(skew) > CLOCK_SKEW_CORRECTED_MS ? skew : 0;
}

// ---- the page ------------------------------------------------------------------------------------------------

function readStoredDevice(token) {
  try {
    const stored = JSON.parse(globalThis.localStorage.getItem(STORAGE_PREFIX + token) || "null");
    if (stored && Number.isInteger(stored.slot) && typeof stored.secret === "string") {
      hexToBytes(stored.secret);
      return stored;
    }
  } catch {
    // No storage (a private window, say), or something else's value there: ask for a secret again.
  }
  return null;
}

function storeDevice(token, device) {
  try {
    globalThis.localStorage.setItem(STORAGE_PREFIX + token, JSON.stringify(device));
  } catch {
    // Storage full or refused: the secret lives as long as the page, and a reload registers again.
  }
}

async function requestDevice(url, csrfToken) {
  const response = await fetch(url, {
    method: "POST",
    credentials: "same-origin",
    headers: { Accept: "application/json", "X-CSRF-Token": csrfToken },
  });
  if (!response.ok) {
    const error = new Error(`HTTP ${response.status}`);
    error.status = response.status;
    throw error;
  }
  const body = await response.json();
  hexToBytes(body.secret);
  return { slot: body.slot, secret: body.secret, code: body.code };
}

function drawQr(container, text) {
  const symbol = qrSymbol(text);
  const extent = symbol.size + 2 * QUIET_ZONE;
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", `0 0 ${extent} ${extent}`);
  svg.setAttribute("shape-rendering", "crispEdges");
  svg.setAttribute("data-testid", "live-qr");
  const background = document.createElementNS(SVG, "rect");
  background.setAttribute("width", String(extent));
  background.setAttribute("height", String(extent));
  background.setAttribute("fill", "#fff");
  const modules = document.createElementNS(SVG, "path");
  modules.setAttribute("d", qrPath(symbol));
  modules.setAttribute("fill", "#000");
  svg.append(background, modules);
  container.replaceChildren(svg);
}

function start(root) {
  const token = root.dataset.cardToken;
  const period = Number(root.dataset.period);
  const knownSlots = new Set((root.dataset.deviceSlots || "").split(",").filter(Boolean).map(Number));
  const offset = clockOffset(Number(root.dataset.serverTime), Date.now());
  const csrfToken = document.querySelector('meta[name="csrf-token"]').content;
  const countdown = document.querySelector('[data-testid="live-countdown"]');
  const seconds = document.querySelector('[data-testid="live-countdown-seconds"]');
  const ring = document.querySelector(".countdown-left");
  let device = null;
  let shownStep = null;
  let timer = null;

  const setStatus = (state, message) => {
    root.dataset.state = state;
    if (message !== undefined) {
      const paragraph = document.createElement("p");
      paragraph.className = state === "error" ? "alert" : "hint";
      paragraph.dataset.testid = "live-code-status";
      paragraph.textContent = message;
      root.replaceChildren(paragraph);
    }
  };

  const tick = () => {
    clearTimeout(timer);
    const now = Date.now() + offset;
    // The page's own code: fresher than the stored one after a key rotation.
    const cardCode = root.dataset.cardCode || device.code;
    const { step, text } = liveCodeAt(cardCode, device, period, now);
    if (step !== shownStep) {
      drawQr(root, text);
      shownStep = step;
      root.dataset.code = text;
      root.dataset.slot = String(device.slot);
      root.dataset.step = String(step);
      setStatus("live");
    }
    const left = secondsLeft(period, now);
    seconds.textContent = String(left);
    ring.setAttribute("stroke-dashoffset", String(100 - (100 * left) / period));
    countdown.hidden = false;
    // Wake at the next whole second: the countdown moves, and a new period draws the next code at once.
    timer = setTimeout(tick, 1000 - (now % 1000) + 5);
  };

  const begin = async (attempt = 0) => {
    device = readStoredDevice(token);
    if (device && !knownSlots.has(device.slot)) device = null; // replaced by a newer browser: ask again
    if (!device) {
      try {
        device = await requestDevice(root.dataset.deviceUrl, csrfToken);
        storeDevice(token, device);
      } catch (error) {
        // 4xx: the card was revoked or replaced, live codes were turned off, or the page's session expired;
        // asking again will not help, reloading will. Anything else is the network: try again shortly.
        if (error && error.status >= 400 && error.status < 500) {
          setStatus("error", "Your live code could not be prepared. Reload the page.");
          return;
        }
        setStatus("error", "Your live code needs a connection the first time. Check it; retrying…");
        setTimeout(() => begin(attempt + 1), RETRY_MS[Math.min(attempt, RETRY_MS.length - 1)]);
        return;
      }
    }
    tick();
    // Timers sleep while the page is hidden; coming back shows the current code at once.
    document.addEventListener("visibilitychange", () => {
      if (document.visibilityState === "visible") tick();
    });
  };

  setStatus("loading");
  begin();
}

if (typeof document !== "undefined") {
  const root = document.getElementById("live-code");
  if (root) start(root);
}
