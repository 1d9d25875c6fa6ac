// QR decoders for the till's camera, best first:
//
//   1. "native"   window.BarcodeDetector, when the browser has it and it reads qr_code (Chrome on Android, Safari);
//   2. "polyfill" the npm package barcode-detector (ZXing compiled to WebAssembly), from /static/vendor;
//   3. "jsqr"     the npm package jsqr (plain JavaScript) on canvas frames, when WebAssembly is missing or the
//                 polyfill fails to start.
//
// The choice is the pure function `pickDecoder(env)` (with `decoderCandidates(env)` for the whole order), so a
// test can check the fallback order without a camera, in Node or in a browser. Importing this module touches
// no browser API; the vendor files are only fetched by `loadDecoder`.
//
// Every file comes from this site: `make install` copies them from node_modules into static/vendor.
//   static/vendor/barcode-detector/ponyfill.js, zxing-exported.js  <- node_modules/barcode-detector/dist/es/
//   static/vendor/zxing-wasm/zxing_reader.wasm                     <- node_modules/zxing-wasm/dist/reader/
//   static/vendor/jsqr/jsQR.js                                     <- node_modules/jsqr/dist/

export const DECODER_KINDS = ["native", "polyfill", "jsqr"];

const VENDOR = new URL("../vendor/", import.meta.url);
const POLYFILL_URL = new URL("barcode-detector/ponyfill.js", VENDOR).href;
const ZXING_WASM_URL = new URL("zxing-wasm/zxing_reader.wasm", VENDOR).href;
const JSQR_URL = new URL("jsqr/jsQR.js", VENDOR).href;

/**
 * The decoders worth trying in this environment, best first.
 * @param {{nativeFormats: string[] | null, webAssembly: boolean}} env
 *   nativeFormats: what BarcodeDetector.getSupportedFormats() answered, or null when there is no BarcodeDetector;
 *   webAssembly: whether the browser has WebAssembly (the polyfill needs it).
 * @returns {string[]} a non-empty list of DECODER_KINDS; "jsqr" is always last, as it needs nothing.
 */
export function decoderCandidates(env) {
  const candidates = [];
  if (Array.isArray(env.nativeFormats) && env.nativeFormats.includes("qr_code")) candidates.push("native");
  if (env.webAssembly) candidates.push("polyfill");
  candidates.push("jsqr");
  return candidates;
}

/** The decoder to try first in `env` (see decoderCandidates). */
export function pickDecoder(env) {
  return decoderCandidates(env)[0];
}

/** What decoderCandidates needs to know about this browser. */
export async function probeEnvironment(scope = globalThis) {
  let nativeFormats = null;
  const Native = scope.BarcodeDetector;
  if (typeof Native === "function" && typeof Native.getSupportedFormats === "function") {
    try {
      nativeFormats = await Native.getSupportedFormats();
    } catch {
      nativeFormats = null; // present but unusable, as on some desktop builds: treat as absent
    }
  }
  return { nativeFormats, webAssembly: typeof scope.WebAssembly === "object" };
}

/**
 * Loads the first candidate that starts; a failure moves on to the next one, with a console warning.
 * @returns {Promise<{kind: string, input: "video" | "imageData", detect: (frame) => Promise<string | null>}>}
 */
export async function loadDecoder(candidates, loaders = LOADERS) {
  const failures = [];
  for (const kind of candidates) {
    try {
      return await loaders[kind]();
    } catch (error) {
      console.warn(`QR decoder "${kind}" could not start; trying the next one.`, error);
      failures.push(`${kind}: ${error && error.message ? error.message : error}`);
    }
  }
  throw new Error(`No QR decoder could start (${failures.join("; ")})`);
}

function firstValue(barcodes) {
  const found = barcodes.find((barcode) => barcode.rawValue);
  return found ? found.rawValue : null;
}

async function loadNative() {
  const detector = new globalThis.BarcodeDetector({ formats: ["qr_code"] });
  // The native detector reads the <video> element directly, with no copy through a canvas.
  return { kind: "native", input: "video", detect: async (video) => firstValue(await detector.detect(video)) };
}

async function loadPolyfill() {
  const { BarcodeDetector, prepareZXingModule } = await import(POLYFILL_URL);
  // By default zxing-wasm fetches its .wasm from a CDN; offline (or under our CSP) every detect() would then
  // fail without saying why. Point it at our copy, and instantiate it now so a failure shows here, once.
  await prepareZXingModule({
    overrides: {
      locateFile: (path, prefix) => (path.endsWith(".wasm") ? ZXING_WASM_URL : prefix + path),
    },
    fireImmediately: true,
  });
  const detector = new BarcodeDetector({ formats: ["qr_code"] });
  await detector.detect(new ImageData(8, 8)); // proves the module decodes; a blank frame finds nothing
  return { kind: "polyfill", input: "imageData", detect: async (frame) => firstValue(await detector.detect(frame)) };
}

async function loadJsqr() {
  // jsQR.js is a UMD bundle: run as a module it finds no CommonJS or AMD and sets self.jsQR.
  await import(JSQR_URL);
  const jsQR = globalThis.jsQR;
  if (typeof jsQR !== "function") throw new Error("jsQR.js loaded but defined no jsQR function");
  return {
    kind: "jsqr",
    input: "imageData",
    detect: async (frame) => {
      // A phone shows the card's QR dark on light, so one pass without inversion is enough and twice as fast.
      const found = jsQR(frame.data, frame.width, frame.height, { inversionAttempts: "dontInvert" });
      return found && found.data ? found.data : null;
    },
  };
}

export const LOADERS = { native: loadNative, polyfill: loadPolyfill, jsqr: loadJsqr };
