// The till (/cashier): read a card's QR code, quote the basket, confirm, show the receipt, void a mistake.
//
// Element ids, each also its data-testid, for browser tests:
//   scanner-status   sentence about the camera / scanner state
//   camera           the <video> showing the rear camera (hidden in manual mode)
//   scan-form        form around wedge-input; a keyboard-wedge scanner types the code and presses Enter
//   wedge-input      focused text input for wedge scanners, paste (looks the code up at once) and typing
//   message          the latest refusal or notice; data-kind="error" | "info"
//   card-summary     the member: card-name (masked), card-tier, card-balances (one <span data-kind> per
//                    balance: points, stamps, vouchers, cashback; card-points is the points figure); and
//                    quote-form with amount (decimal string), redeem-input (whole points) and redeem-max,
//                    cashback-input and cashback-max (cashback programs), coupon-input with coupon-add and
//                    coupon-chips (<li data-testid="coupon-chip" data-code>, each with a coupon-remove ×),
//                    offer-list (a checkbox per running offer, value = its id), reward-select, use-voucher,
//                    quote-button, cancel-button. Offers, rewards and the voucher show only when the scan's
//                    answer lists them.
//   quote            quote-amount, quote-lines (one <tr data-kind> per discount line), quote-notes (a
//                    <tr data-kind="refusal"> per refused coupon, a <tr data-kind="notice"> per notice),
//                    quote-amount-due, quote-outcome (<tr data-kind="points_earned" | "points_spent" |
//                    "stamps_added" | "voucher_issued" | "cashback_earned" | "bonus">), confirm-button
//   receipt          receipt-id, receipt-amount, receipt-lines, receipt-notes, receipt-amount-due,
//                    receipt-outcome (as in the quote), receipt-balance, receipt-tier,
//                    next-button ("Next customer": clears the till and resumes scanning; cancel-button too)
//   recent-list      this member of staff's latest purchases: each <li data-testid="recent-purchase"
//                    data-purchase-id data-status>, with a void-button (first tap arms it, second tap voids)
//
// State for tests: once the scanner is set up, <body data-scanner-ready="camera" | "manual">, and with the
// camera also data-decoder="native" | "polyfill" | "jsqr". <body data-phase> names the till's current step.
//
// One code, one lookup: the camera loop stops at the first code it reads, and every handler checks the phase
// before acting, so a second frame, a second Enter or a double tap cannot post twice. A purchase carries an
// Idempotency-Key made when its quote is shown; a retry after a failure sends the same key, so the server
// commits it once. Confirm sends the very body that was quoted: the same coupons, offers, reward and redemption.
//
// The pure parts (the request body from the form, the quote's rows) are in till-quote.js, tested in Node.

import { decoderCandidates, loadDecoder, probeEnvironment } from "./decoders.js";
import {
  addCoupon,
  balanceFigures,
  fieldWithCardCode,
  looksLikeCardCode,
  mostCashbackToSpend,
  mostPointsToRedeem,
  normaliseCouponCode,
  offerChoice,
  quoteRequestBody,
  quoteRows,
  receiptRows,
  refusedChoices,
  removeCoupon,
  rewardOptions,
} from "./till-quote.js";

const NETWORK_MESSAGE =
  "No connection to the server. Check the network and try again — nothing was charged twice.";
const FRAME_INTERVAL_MS = 60;
const MAX_FRAME_WIDTH = 960; // wide enough for a card's QR at arm's length, small enough to decode fast
// A card still in front of the camera (refused, or the customer just served) is not looked up again at once.
const SAME_CODE_QUIET_MS = 3000;
const VOID_ARM_MS = 4000;

const $ = (id) => document.getElementById(id);
const till = $("till");
const csrfToken = document.querySelector('meta[name="csrf-token"]').content;
const currency = till.dataset.currency;
const rowOptions = {
  currency,
  programType: till.dataset.programType || "points",
  stampsNeeded: Number(till.dataset.stampsNeeded) || 0,
  voucherLabel: till.dataset.stampReward || "",
};
const redeemRules = {
  pointValue: Number(till.dataset.pointValue) || 0, // 0: points do not pay for purchases in this program
  maxPercent: Number(till.dataset.redeemMaxPercent) || 0,
};
const urls = {
  scan: till.dataset.scanUrl,
  quote: till.dataset.quoteUrl,
  purchases: till.dataset.purchasesUrl,
  signIn: till.dataset.signInUrl,
};

const state = {
  phase: "scanning", // scanning, looking-up, card, quoting, quoted, confirming, receipt
  code: null,
  card: null,
  quoted: null, // the exact body the shown quote was for; Confirm commits this, not the inputs' current text
  quote: null, // the server's answer to it: the receipt repeats its refusals and notices
  refused: null, // what the shown quote refused ({coupons, offers, any}); Confirm waits until it is taken off
  coupons: [], // the codes added as chips, in the order the server applies them
  idempotencyKey: null,
  quiet: { code: null, until: 0 }, // the camera ignores this code until then
};

let decoder = null;
let stream = null;
let scanTimer = null;
const frameCanvas = document.createElement("canvas");
const frameContext = frameCanvas.getContext("2d", { willReadFrequently: true });

class TillError extends Error {
  constructor(message, { code = "", status = 0 } = {}) {
    super(message);
    this.code = code;
    this.status = status;
  }
}

// ---- talking to the server ---------------------------------------------------------------------------------

async function callApi(method, url, body, headers = {}) {
  let response;
  try {
    response = await fetch(url, {
      method,
      credentials: "same-origin",
      headers: {
        Accept: "application/json",
        "X-CSRF-Token": csrfToken,
        ...(body === undefined ? {} : { "Content-Type": "application/json" }),
        ...headers,
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new TillError(NETWORK_MESSAGE, { code: "network" });
  }
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null; // a proxy's HTML error page, say
  }
  if (!response.ok) {
    throw new TillError(refusalSentence(response.status, data), {
      code: (data && data.code) || `http_${response.status}`,
      status: response.status,
    });
  }
  return data;
}

// The server's problem `detail` is already a sentence for a person; these cover answers that carry none.
function refusalSentence(status, problem) {
  if (problem && typeof problem.detail === "string" && problem.detail) return problem.detail;
  if (status === 401) return "Your session has ended; sign in again.";
  if (status >= 500) return "The server could not answer. Try again — nothing was charged twice.";
  return `The server refused this (HTTP ${status}). Reload the page and try again.`;
}

function newIdempotencyKey() {
  if (globalThis.crypto && typeof crypto.randomUUID === "function") return crypto.randomUUID();
  // randomUUID exists only in secure contexts; a till on plain http (a LAN address) still has getRandomValues.
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

// ---- what the cashier sees -----------------------------------------------------------------------------------

function setPhase(phase) {
  state.phase = phase;
  document.body.dataset.phase = phase;
  $("wedge-input").readOnly = phase !== "scanning";
  $("scan-submit").disabled = phase !== "scanning";
  $("quote-button").disabled = !["card", "quoted"].includes(phase);
  $("confirm-button").disabled = phase !== "quoted" || Boolean(state.refused && state.refused.any);
  $("confirm-button").textContent = phase === "confirming" ? "Confirming…" : $("confirm-button").dataset.label;
  $("card-summary").hidden = !["card", "quoting", "quoted", "confirming"].includes(phase);
  $("quote").hidden = !["quoted", "confirming"].includes(phase);
  $("receipt").hidden = phase !== "receipt";
  if (phase === "scanning") resumeCamera();
  else pauseCamera();
}

function say(message, kind = "error") {
  const box = $("message");
  box.replaceChildren(document.createTextNode(message));
  box.dataset.kind = kind;
  box.className = kind === "error" ? "alert" : "notice";
  box.hidden = false;
}

function sayError(error) {
  say(error.message, "error");
  if (error.status === 401) {
    const link = document.createElement("a");
    link.href = urls.signIn;
    link.textContent = "Sign in";
    $("message").append(" ", link);
  }
}

function clearMessage() {
  $("message").hidden = true;
  $("message").replaceChildren();
}

function money(amount) {
  return `${amount} ${currency}`;
}

function showCard(card) {
  $("card-name").textContent = card.display_name;
  $("card-tier").textContent = card.tier || "Member";
  const figures = balanceFigures(card, rowOptions).map((figure) => {
    const span = document.createElement("span");
    span.dataset.kind = figure.kind;
    if (figure.kind === "points") {
      const number = document.createElement("span");
      number.id = "card-points";
      number.dataset.testid = "card-points";
      number.textContent = String(Number(card.points) || 0);
      span.append(number, figure.text.replace(/^\S+/, ""));
    } else {
      span.textContent = figure.text;
    }
    return span;
  });
  $("card-balances").replaceChildren(...figures);
}

// The choices this card has at the till, from the scan's answer; each is shown only when there is one.
function showChoices(card) {
  const offers = (card.offers || []).map((offer) => {
    const choice = offerChoice(offer, currency);
    const label = document.createElement("label");
    label.className = "checkbox";
    const box = document.createElement("input");
    box.type = "checkbox";
    box.name = "offer_ids";
    box.value = choice.id;
    box.dataset.title = choice.title;
    box.dataset.testid = "offer-choice";
    const text = document.createElement("span");
    const title = document.createElement("strong");
    title.textContent = choice.title;
    text.append(title);
    if (choice.terms) {
      const terms = document.createElement("small");
      terms.textContent = choice.terms;
      text.append(" ", terms);
    }
    label.append(box, text);
    return label;
  });
  $("offer-list").replaceChildren(...offers);
  $("offers-field").hidden = offers.length === 0;

  const none = document.createElement("option");
  none.value = "";
  none.textContent = "No reward";
  const rewards = rewardOptions(card).map((choice) => {
    const option = document.createElement("option");
    option.value = choice.value;
    option.textContent = choice.disabled ? `${choice.text} (not enough points)` : choice.text;
    option.disabled = choice.disabled;
    return option;
  });
  $("reward-select").replaceChildren(none, ...rewards);
  $("reward-field").hidden = rewards.length === 0;

  $("voucher-field").hidden = !(Number(card.vouchers) > 0);
  $("redeem-field").hidden = !redeemRules.pointValue; // the server refuses redemption in such a program
  $("cashback-field").hidden = !(card.cashback != null
    && (rowOptions.programType === "cashback" || Number(card.cashback) > 0));
}

function fillRows(tbody, rows) {
  const drawn = rows.map((row) => {
    const tr = document.createElement("tr");
    tr.dataset.kind = row.kind;
    if (row.tone) tr.className = `row-${row.tone}`;
    if (row.value === "") {
      const cell = document.createElement("td");
      cell.colSpan = 2;
      const label = document.createElement("span");
      label.className = "note-label";
      label.textContent = row.label;
      cell.append(label);
      if (row.detail) {
        const detail = document.createElement("span");
        detail.className = "note-detail";
        detail.textContent = row.detail;
        cell.append(detail);
      }
      tr.append(cell);
    } else {
      const label = document.createElement(row.tone === "discount" ? "td" : "th");
      if (label.tagName === "TH") label.scope = "row";
      label.textContent = row.label;
      const value = document.createElement("td");
      value.className = "num";
      value.textContent = row.value;
      tr.append(label, value);
    }
    return tr;
  });
  tbody.replaceChildren(...drawn);
}

function showQuote(quote) {
  const rows = quoteRows(quote, rowOptions);
  fillRows($("quote-lines"), rows.lines);
  fillRows($("quote-notes"), rows.notes);
  fillRows($("quote-outcome"), rows.outcome);
  $("quote-amount").textContent = money(quote.amount);
  $("quote-amount-due").textContent = money(quote.amount_due);
  // A chip whose coupon the server refused says so until the basket changes.
  state.refused = refusedChoices(quote, chosenOffers());
  for (const chip of $("coupon-chips").children) {
    chip.dataset.refused = String(state.refused.coupons.includes(chip.dataset.code));
  }
  $("quote-blocked").hidden = !state.refused.any;
}

// The offers ticked, as {id, title}: the title is how a quote's "offer" line names the offer it applied.
function chosenOffers() {
  const ticked = [...$("offer-list").querySelectorAll("input:checked")];
  return ticked.map((box) => ({ id: box.value, title: box.dataset.title }));
}

function showReceipt(purchase) {
  const quote = state.quote || {};
  const rows = receiptRows(purchase, quote, rowOptions);
  $("receipt-id").textContent = String(purchase.id);
  $("receipt-amount").textContent = money(purchase.amount ?? quote.amount);
  fillRows($("receipt-lines"), rows.lines);
  fillRows($("receipt-notes"), rows.notes);
  fillRows($("receipt-outcome"), rows.outcome);
  $("receipt-amount-due").textContent = money(purchase.amount_due);
  const after = {
    points: purchase.points ?? quote.points_after,
    stamps: purchase.stamps ?? quote.stamps,
    vouchers: purchase.vouchers ?? quote.vouchers,
    cashback: purchase.cashback ?? quote.cashback,
  };
  $("receipt-balance").textContent = balanceFigures(after, rowOptions).map((figure) => figure.text).join(" · ")
    || String(after.points ?? 0);
  $("receipt-tier").textContent = purchase.tier || "Member";
}

function showCoupons() {
  const chips = state.coupons.map((code) => {
    const chip = document.createElement("li");
    chip.className = "chip";
    chip.dataset.testid = "coupon-chip";
    chip.dataset.code = code;
    const text = document.createElement("span");
    text.textContent = code;
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "chip-remove";
    remove.dataset.testid = "coupon-remove";
    remove.dataset.code = code;
    remove.setAttribute("aria-label", `Remove ${code}`);
    remove.textContent = "×";
    chip.append(text, remove);
    return chip;
  });
  $("coupon-chips").replaceChildren(...chips);
}

function clearTill() {
  state.code = null;
  state.card = null;
  state.quoted = null;
  state.quote = null;
  state.refused = null;
  state.idempotencyKey = null;
  state.coupons = [];
  for (const id of ["wedge-input", "amount", "redeem-input", "cashback-input", "coupon-input"]) $(id).value = "";
  $("use-voucher").checked = false;
  showCoupons();
  for (const id of ["quote-lines", "quote-notes", "quote-outcome", "offer-list"]) $(id).replaceChildren();
  $("reward-select").replaceChildren();
}

// ---- the steps ---------------------------------------------------------------------------------------------

// Card codes are upper-case base32; a scanner with caps lock on, or a paste with a line break, still works.
function normaliseCode(raw) {
  return String(raw).replace(/\s+/g, "").toUpperCase();
}

async function lookUp(raw, source) {
  if (state.phase !== "scanning") return; // one code, one lookup
  const code = normaliseCode(raw);
  if (!code) return;
  if (source === "camera" && code === state.quiet.code && Date.now() < state.quiet.until) {
    scheduleFrame(); // the same card is still in view: do not ask again
    return;
  }
  setPhase("looking-up");
  clearMessage();
  try {
    const card = await callApi("POST", urls.scan, { code });
    state.code = code;
    state.card = card;
    showCard(card);
    showChoices(card);
    setPhase("card");
    $("card-summary").scrollIntoView({ block: "nearest" });
    $("amount").focus();
  } catch (error) {
    state.quiet = { code, until: Date.now() + SAME_CODE_QUIET_MS };
    $("wedge-input").value = "";
    sayError(error);
    setPhase("scanning");
    $("wedge-input").focus();
  }
}

// The form as the cashier left it, as the quote (and then the purchase) request.
function quoteRequest() {
  return quoteRequestBody(state.code, {
    amount: $("amount").value,
    redeemPoints: $("redeem-input").value,
    redeemCashback: $("cashback-field").hidden ? "" : $("cashback-input").value,
    couponCodes: state.coupons,
    offerIds: chosenOffers().map((offer) => offer.id),
    rewardId: $("reward-field").hidden ? "" : $("reward-select").value,
    useVoucher: !$("voucher-field").hidden && $("use-voucher").checked,
  });
}

function sayCardScannedMeanwhile() {
  say(`A card was scanned while serving ${state.card.display_name}. Finish this purchase, or press Cancel ` +
      "to serve the other customer.");
}

// Adds the coupon field's code as a chip, unless it is empty, already there, or a card's code the scanner typed.
function addTypedCoupon() {
  const input = $("coupon-input");
  const typed = normaliseCouponCode(input.value);
  const result = addCoupon(state.coupons, typed);
  if (result.refused === "empty") return;
  input.value = "";
  if (result.refused === "card_code") {
    sayCardScannedMeanwhile(); // the next customer's card, scanned while the coupon field had the focus
  } else if (result.refused === "duplicate") {
    say(`${typed} is already on this purchase.`, "info");
  } else {
    state.coupons = result.codes;
    showCoupons();
    onBasketEdited();
  }
}

async function requestQuote() {
  if (!["card", "quoted"].includes(state.phase)) return;
  const scannedInto = fieldWithCardCode({
    amount: $("amount").value, redeemPoints: $("redeem-input").value, redeemCashback: $("cashback-input").value,
  });
  if (scannedInto || looksLikeCardCode($("coupon-input").value)) {
    const field = { amount: "amount", redeemPoints: "redeem-input", redeemCashback: "cashback-input" }[scannedInto];
    $(field || "coupon-input").value = "";
    sayCardScannedMeanwhile();
    return;
  }
  addTypedCoupon(); // a code typed but not yet added is meant for this quote
  const body = quoteRequest();
  setPhase("quoting");
  clearMessage();
  try {
    const quote = await callApi("POST", urls.quote, body);
    state.quoted = body;
    state.quote = quote;
    showQuote(quote); // before the phase, which enables Confirm only when nothing was refused
    // Made now, with the quote on screen: every tap or retry of this Confirm sends the same key.
    state.idempotencyKey = newIdempotencyKey();
    showCard(quote.card);
    setPhase("quoted");
    $("quote").scrollIntoView({ block: "nearest" });
    $(state.refused.any ? "requote-button" : "confirm-button").focus();
  } catch (error) {
    sayError(error);
    setPhase("card");
    $("amount").focus();
  }
}

async function confirmPurchase() {
  if (state.phase !== "quoted") return; // a double tap lands here while the first is in flight
  setPhase("confirming");
  clearMessage();
  try {
    const purchase = await callApi("POST", urls.purchases, state.quoted, { "Idempotency-Key": state.idempotencyKey });
    showReceipt(purchase);
    setPhase("receipt");
    $("receipt").scrollIntoView({ block: "nearest" });
    $("next-button").focus();
    refreshRecent();
  } catch (error) {
    sayError(error);
    if (error.code === "network" || error.status >= 500) {
      setPhase("quoted"); // the same quote and the same key: a retry cannot charge twice
      $("confirm-button").textContent = "Try again";
    } else {
      state.quoted = null; // refused as it stands: a fresh quote (and key) is needed
      setPhase("card");
    }
  }
}

function nextCustomer() {
  if (state.code) state.quiet = { code: state.code, until: Date.now() + SAME_CODE_QUIET_MS };
  clearTill();
  clearMessage();
  setPhase("scanning");
  $("wedge-input").focus();
}

// A changed amount, coupon, offer, reward or redemption makes the shown quote stale; Confirm must not stay
// available for it. The Quote button prices the basket again.
function onBasketEdited() {
  for (const chip of $("coupon-chips").children) delete chip.dataset.refused;
  if (state.phase === "quoted") {
    state.quoted = null;
    state.quote = null;
    state.refused = null;
    setPhase("card");
  }
}

// The refused coupons and offers come off the purchase, and what is left is quoted again.
function takeOffRefused() {
  if (state.phase !== "quoted" || !state.refused) return;
  const { coupons, offers } = state.refused;
  state.coupons = state.coupons.filter((code) => !coupons.includes(code));
  showCoupons();
  for (const box of $("offer-list").querySelectorAll("input:checked")) {
    if (offers.includes(box.value)) box.checked = false;
  }
  onBasketEdited();
  requestQuote();
}

function onCouponKey(event) {
  if (event.key !== "Enter") return;
  // Enter in an empty coupon field quotes, as in the other fields; with a code in it, it adds the code.
  if (!$("coupon-input").value.trim()) return;
  event.preventDefault();
  addTypedCoupon();
}

function onChipClick(event) {
  const remove = event.target.closest(".chip-remove");
  if (!remove) return;
  state.coupons = removeCoupon(state.coupons, remove.dataset.code);
  showCoupons();
  onBasketEdited();
  $("coupon-input").focus();
}

// "Max" fills in the most the card can pay with: the redemption cap is a share of what is left after the
// discounts, so it is read off a quote of this basket (the one shown, or one asked for now without this
// redemption), and the basket is then quoted with it.
async function fillMost(input, most, leaveOut) {
  if (!state.card || !["card", "quoted"].includes(state.phase)) return;
  let quote = state.phase === "quoted" ? state.quote : null;
  if (!quote && $("amount").value.trim() && !fieldWithCardCode({ amount: $("amount").value })) {
    const serving = state.code;
    setPhase("quoting");
    try {
      const body = quoteRequest();
      leaveOut(body);
      quote = await callApi("POST", urls.quote, body);
    } catch {
      quote = null; // the quote below says what is wrong with the basket
    }
    if (state.phase !== "quoting" || state.code !== serving) return; // Cancel was pressed meanwhile
    setPhase("card");
  }
  $(input).value = most(quote);
  onBasketEdited();
  if ($("amount").value.trim()) requestQuote();
}

function redeemMostPoints() {
  fillMost("redeem-input", (quote) => String(mostPointsToRedeem(state.card, {
    rewardId: $("reward-field").hidden ? "" : $("reward-select").value, quote, ...redeemRules,
  })), (body) => {
    body.redeem_points = 0;
    delete body.redeem_cashback;
  });
}

function spendMostCashback() {
  fillMost("cashback-input", (quote) => mostCashbackToSpend(state.card, { quote, ...redeemRules }),
    (body) => delete body.redeem_cashback);
}

// ---- recent purchases and voids ------------------------------------------------------------------------------

function formatTime(iso) {
  const when = new Date(iso.endsWith("Z") || /[+-]\d\d:\d\d$/.test(iso) ? iso : `${iso}Z`);
  return Number.isNaN(when.getTime()) ? "" : when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function recentItem(purchase) {
  const item = document.createElement("li");
  item.dataset.testid = "recent-purchase";
  item.dataset.purchaseId = String(purchase.id);
  item.dataset.status = purchase.status;
  const text = document.createElement("span");
  const earned = purchase.points_earned ? ` · +${purchase.points_earned} pts` : "";
  text.textContent =
    `#${purchase.id} · ${formatTime(purchase.created_at)} · ${purchase.card.display_name} · ` +
    `${money(purchase.amount_due)}${earned}`;
  item.append(text);
  if (purchase.status === "committed") {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "button secondary void-button";
    button.dataset.testid = "void-button";
    button.dataset.purchaseId = String(purchase.id);
    button.textContent = "Void";
    item.append(button);
  } else {
    const status = document.createElement("span");
    status.className = "status";
    status.textContent = "Voided";
    item.append(status);
  }
  return item;
}

async function refreshRecent() {
  try {
    const data = await callApi("GET", urls.purchases);
    const items = data.purchases.map(recentItem);
    $("recent-list").replaceChildren(...items);
    $("recent-empty").hidden = items.length > 0;
  } catch (error) {
    // The list is a convenience; the till goes on working without it.
    console.warn("Could not load recent purchases", error);
  }
}

async function onVoidClick(event) {
  const button = event.target.closest(".void-button");
  if (!button || button.disabled) return;
  // A void cannot be undone, so the first tap only arms the button.
  if (button.dataset.armed !== "true") {
    button.dataset.armed = "true";
    button.textContent = "Tap again to void";
    setTimeout(() => {
      if (button.isConnected && !button.disabled) {
        button.dataset.armed = "false";
        button.textContent = "Void";
      }
    }, VOID_ARM_MS);
    return;
  }
  button.disabled = true;
  button.textContent = "Voiding…";
  const id = button.dataset.purchaseId;
  try {
    const result = await callApi("POST", `${urls.purchases}/${id}/void`, {});
    say(`Purchase #${result.id} voided. The card now has ${result.points} points.`, "info");
  } catch (error) {
    sayError(error);
  }
  refreshRecent();
}

// ---- the camera ----------------------------------------------------------------------------------------------

function frameFor(video) {
  if (decoder.input === "video") return video;
  const scale = Math.min(1, MAX_FRAME_WIDTH / video.videoWidth);
  const width = Math.round(video.videoWidth * scale);
  const height = Math.round(video.videoHeight * scale);
  if (frameCanvas.width !== width || frameCanvas.height !== height) {
    frameCanvas.width = width;
    frameCanvas.height = height;
  }
  frameContext.drawImage(video, 0, 0, width, height);
  return frameContext.getImageData(0, 0, width, height);
}

function scheduleFrame() {
  if (!decoder || !stream || scanTimer !== null || state.phase !== "scanning") return;
  scanTimer = setTimeout(scanFrame, FRAME_INTERVAL_MS);
}

async function scanFrame() {
  scanTimer = null;
  const video = $("camera");
  if (state.phase !== "scanning") return;
  if (video.readyState < 2 || !video.videoWidth) {
    scheduleFrame();
    return;
  }
  let value = null;
  try {
    value = await decoder.detect(frameFor(video));
  } catch (error) {
    console.warn("QR decoding failed on a frame", error); // a frame mid-resize, say; the next one may do
  }
  if (value && state.phase === "scanning") lookUp(value, "camera");
  else scheduleFrame();
}

function pauseCamera() {
  if (scanTimer !== null) {
    clearTimeout(scanTimer);
    scanTimer = null;
  }
  if (stream) $("camera").pause(); // the frozen frame shows the card that was read
}

function resumeCamera() {
  if (!stream) return;
  $("camera").play().catch(() => {});
  scheduleFrame();
}

function cameraProblem(error) {
  if (!window.isSecureContext) {
    return "The camera needs HTTPS (or http://127.0.0.1). Scan with a barcode scanner or type the code.";
  }
  if (error && error.name === "NotAllowedError") {
    return "Camera access was refused. Allow the camera in the browser's site settings, or use a barcode scanner.";
  }
  if (error && (error.name === "NotFoundError" || error.name === "OverconstrainedError")) {
    return "No camera found. Scan with a barcode scanner or type the code.";
  }
  if (error && error.name === "NotReadableError") {
    return "The camera is in use by another app. Close it, reload, or use a barcode scanner.";
  }
  return "The camera could not start. Scan with a barcode scanner or type the code.";
}

async function startCamera() {
  if (!window.isSecureContext || !navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    throw Object.assign(new Error("no camera API here"), { name: "InsecureContext" });
  }
  const media = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" }, audio: false });
  const video = $("camera");
  video.srcObject = media;
  await video.play();
  return media;
}

async function setUpScanner() {
  const status = $("scanner-status");
  let cameraError = null;
  try {
    const [media, chosen] = await Promise.all([
      startCamera(),
      probeEnvironment().then((env) => loadDecoder(decoderCandidates(env))),
    ]);
    stream = media;
    decoder = chosen;
  } catch (error) {
    cameraError = error;
  }
  if (stream && decoder) {
    $("camera").hidden = false;
    document.body.dataset.decoder = decoder.kind;
    document.body.dataset.scannerReady = "camera";
    status.textContent = "Hold the card's QR code up to the camera, or scan it with a barcode scanner.";
    if (state.phase === "scanning") scheduleFrame();
    else pauseCamera();
    return;
  }
  // Camera started but no decoder (or the reverse): release what we hold and go on without a camera.
  const media = stream || $("camera").srcObject;
  if (media) media.getTracks().forEach((track) => track.stop());
  stream = null;
  decoder = null;
  $("camera").hidden = true;
  console.warn("Scanning without the camera:", cameraError);
  status.textContent = cameraError && cameraError.message && cameraError.message.startsWith("No QR decoder")
    ? "The QR decoder could not start. Scan with a barcode scanner or type the code."
    : cameraProblem(cameraError);
  document.body.dataset.scannerReady = "manual";
}

// ---- wiring --------------------------------------------------------------------------------------------------

function wire() {
  $("confirm-button").dataset.label = $("confirm-button").textContent;
  $("scan-form").addEventListener("submit", (event) => {
    event.preventDefault();
    lookUp($("wedge-input").value, "input");
  });
  $("wedge-input").addEventListener("paste", (event) => {
    const pasted = event.clipboardData && event.clipboardData.getData("text");
    if (!pasted) return; // let the browser paste; the cashier presses Enter
    event.preventDefault();
    $("wedge-input").value = pasted.trim();
    lookUp(pasted, "paste");
  });
  $("quote-form").addEventListener("submit", (event) => {
    event.preventDefault();
    requestQuote();
  });
  for (const id of ["amount", "redeem-input", "cashback-input", "coupon-input"]) {
    $(id).addEventListener("input", onBasketEdited);
  }
  $("offer-list").addEventListener("change", onBasketEdited);
  $("reward-select").addEventListener("change", onBasketEdited);
  $("use-voucher").addEventListener("change", onBasketEdited);
  $("coupon-input").addEventListener("keydown", onCouponKey);
  $("coupon-add").addEventListener("click", () => {
    addTypedCoupon();
    $("coupon-input").focus();
  });
  $("coupon-chips").addEventListener("click", onChipClick);
  $("redeem-max").addEventListener("click", redeemMostPoints);
  $("cashback-max").addEventListener("click", spendMostCashback);
  $("requote-button").addEventListener("click", takeOffRefused);
  $("confirm-button").addEventListener("click", confirmPurchase);
  $("next-button").addEventListener("click", nextCustomer);
  $("cancel-button").addEventListener("click", nextCustomer);
  $("recent-list").addEventListener("click", onVoidClick);
  setPhase("scanning");
  $("wedge-input").focus();
  refreshRecent();
  setUpScanner();
}

wire();
