// The till's basket and quote as plain values: what the cashier chose becomes the request body, and the server's
// quote (or committed purchase) becomes the rows the page draws. No DOM here, so Node tests it
// (tests/test_cashier_scripts.py); static/js/cashier.js turns the rows into table rows.
//
// A row is { kind, label, value, detail, tone }:
//   kind    the line's kind for a discount line ("tier_discount", "coupon", "offer", "second_visit", "reward",
//           "voucher", "points_redemption", "cashback_redemption"); "refusal" and "notice" for what was not
//           applied; "points_earned", "points_spent", "stamps_added", "voucher_issued", "cashback_earned",
//           "bonus" for what the purchase earns and spends
//   label   what the row says; value the figure for the right-hand column ("" for a note)
//   detail  a second sentence under a note (the server's own words), or ""
//   tone    "discount", "warning", "info" or "earned": how the row is marked
//
// Every field the server may leave out (an older API, a program without the mechanic) is read as absent, so
// the page shows what it is told and nothing more.

// What a keyboard-wedge scanner typed into a basket field when the cashier scanned a card while serving
// someone. A static code, or a live one (code.slot.totp, docs/card-code.md).
export const LOOKS_LIKE_A_CARD_CODE = /^[A-Za-z2-7]{20,}(\.\d+\.\d{6})?$/;

export function looksLikeCardCode(text) {
  return LOOKS_LIKE_A_CARD_CODE.test(String(text ?? "").trim());
}

// "12,50" is how many cashiers type money; the server wants "12.50".
export function normaliseAmount(text) {
  const amount = String(text ?? "").trim();
  return amount.includes(".") ? amount : amount.replace(",", ".");
}

// Whole points as a number; anything but digits goes to the server as typed, so its refusal says what is wrong.
export function wholeOrAsTyped(text) {
  const typed = String(text ?? "").trim();
  if (typed === "") return 0;
  return /^[0-9]+$/.test(typed) ? Number(typed) : typed;
}

// As the server compares codes (mechanics.normalize_code): upper case, no spaces. "spring 10" is SPRING10.
export function normaliseCouponCode(text) {
  return String(text ?? "").replace(/\s+/g, "").toUpperCase();
}

// The coupon list with `typed` added, or why not: "empty", "card_code" (the scanner typed a card's code into
// the coupon field), "duplicate".
export function addCoupon(codes, typed) {
  const code = normaliseCouponCode(typed);
  if (!code) return { codes, added: null, refused: "empty" };
  if (looksLikeCardCode(code)) return { codes, added: null, refused: "card_code" };
  if (codes.includes(code)) return { codes, added: null, refused: "duplicate" };
  return { codes: [...codes, code], added: code, refused: null };
}

export function removeCoupon(codes, code) {
  return codes.filter((each) => each !== code);
}

// The fields of the basket form that a scanned card code could have landed in, if any did.
export function fieldWithCardCode(form) {
  for (const name of ["amount", "redeemPoints", "redeemCashback"]) {
    if (looksLikeCardCode(form[name])) return name;
  }
  return null;
}

// The quote (and purchase) request for the scanned `code` and the form's state:
//   { amount, redeemPoints, redeemCashback, couponCodes, offerIds, rewardId, useVoucher }
// Mechanics the cashier did not use are left out, so an older server reads the body it always read.
export function quoteRequestBody(code, form) {
  const body = { code, amount: normaliseAmount(form.amount), redeem_points: wholeOrAsTyped(form.redeemPoints) };
  const coupons = (form.couponCodes || []).map(normaliseCouponCode).filter(Boolean);
  if (coupons.length) body.coupon_codes = [...new Set(coupons)];
  const offers = (form.offerIds || []).map(Number).filter((id) => Number.isInteger(id) && id > 0);
  if (offers.length) body.offer_ids = [...new Set(offers)];
  const reward = form.rewardId === "" || form.rewardId == null ? null : Number(form.rewardId);
  if (Number.isInteger(reward) && reward > 0) body.reward_id = reward;
  const cashback = normaliseAmount(form.redeemCashback);
  if (cashback !== "" && !/^0*(\.0*)?$/.test(cashback)) body.redeem_cashback = cashback;
  if (form.useVoucher) body.use_voucher = true;
  return body;
}

// ---- redemption ------------------------------------------------------------------------------------------------

const REDEMPTION_KINDS = new Set(["points_redemption", "cashback_redemption"]);

// The share of the basket points and cashback may pay, in minor units, read off a quote: `maxPercent` of what
// is left after every other line (redemption comes last, so the other lines do not depend on it).
export function redemptionCap(quote, { maxPercent = 100 } = {}) {
  const decimals = decimalsOf(quote.amount);
  const left = (quote.lines || [])
    .filter((line) => !REDEMPTION_KINDS.has(line.kind))
    .reduce((sum, line) => sum - toMinor(line.amount, decimals), toMinor(quote.amount, decimals));
  return Math.max(0, Math.floor((left * maxPercent) / 100));
}

// The most points the cashier can ask for: what the card holds after the chosen reward's cost and, given a
// quote of this basket, what the redemption cap lets pay (`pointValue` minor units a point).
export function mostPointsToRedeem(card, { rewardId = "", quote = null, pointValue = 0, maxPercent = 100 } = {}) {
  const points = Number(card && card.points) || 0;
  const reward = ((card && card.rewards) || []).find((each) => String(each.id) === String(rewardId));
  const held = Math.max(0, points - (reward ? Number(reward.points_cost) || 0 : Number(quote?.reward_points) || 0));
  if (!quote || !pointValue) return held;
  return Math.max(0, Math.min(held, Math.floor(redemptionCap(quote, { maxPercent }) / pointValue)));
}

// The most cashback to spend, as a decimal string: the card's balance and, given a quote, what the cap leaves
// after the points redeemed in it.
export function mostCashbackToSpend(card, { quote = null, pointValue = 0, maxPercent = 100 } = {}) {
  const balance = String(card && card.cashback != null ? card.cashback : "0");
  if (!quote) return balance;
  const decimals = decimalsOf(quote.amount);
  const room = redemptionCap(quote, { maxPercent }) - (Number(quote.points_redeemed) || 0) * pointValue;
  return formatMinor(Math.max(0, Math.min(toMinor(balance, decimals), room)), decimals);
}

// ---- what stops a confirm ----------------------------------------------------------------------------------------

// A purchase commits only what its quote showed applying, so a refused coupon or offer must come off first.
// `chosenOffers` are the offers sent ({id, title}); one with no "offer" line of its title was refused.
export function refusedChoices(quote, chosenOffers = []) {
  const coupons = (quote.coupon_refusals || quote.refusals || []).map((each) => each.code || each.coupon);
  const offerRefused = (quote.notices || quote.warnings || []).some((each) => String(each.code).startsWith("offer_"));
  const applied = new Set((quote.lines || []).filter((line) => line.kind === "offer").map((line) => line.label));
  const offers = offerRefused ? chosenOffers.filter((offer) => !applied.has(offer.title)).map((offer) => offer.id) : [];
  return { coupons, offers, any: coupons.length > 0 || offerRefused };
}

// An offer as the till lists it: its title, and its terms in a line.
export function offerChoice(offer, currency) {
  const terms = [];
  // The server writes a percentage as "10%" and a fixed discount as an amount, "1.00".
  if (offer.discount) terms.push(`${offer.discount}${String(offer.discount).endsWith("%") ? "" : ` ${currency}`} off`);
  if (offer.min_basket && !isZeroAmount(offer.min_basket)) terms.push(`on ${offer.min_basket} ${currency} or more`);
  if (offer.detail) terms.push(offer.detail);
  return { id: String(offer.id), title: offer.title, terms: terms.join(" · ") };
}

// ---- money ---------------------------------------------------------------------------------------------------

// The currency's decimals, read off an amount the server formatted ("12.50" -> 2, "1250" -> 0).
export function decimalsOf(formatted) {
  const match = /\.(\d+)$/.exec(String(formatted ?? ""));
  return match ? match[1].length : 0;
}

// A decimal string as minor units: "2.5" with 2 decimals -> 250. Not a number: 0.
export function toMinor(text, decimals) {
  const match = /^(-?)(\d*)(?:\.(\d*))?$/.exec(String(text ?? "").trim());
  if (!match || (!match[2] && !match[3])) return 0;
  const fraction = (match[3] || "").padEnd(decimals, "0").slice(0, decimals);
  const minor = Number(match[2] || "0") * 10 ** decimals + Number(fraction || "0");
  return match[1] ? -minor : minor;
}

// Minor units as the server writes amounts: 250 with 2 decimals -> "2.50".
export function formatMinor(minor, decimals) {
  const value = Math.trunc(Number(minor) || 0);
  const sign = value < 0 ? "-" : "";
  const digits = String(Math.abs(value)).padStart(decimals + 1, "0");
  return decimals ? `${sign}${digits.slice(0, -decimals)}.${digits.slice(-decimals)}` : `${sign}${digits}`;
}

function isZeroAmount(amount) {
  return amount == null || amount === "" || Number(amount) === 0;
}

function plural(count, word) {
  return `${count} ${word}${Math.abs(count) === 1 ? "" : "s"}`;
}

// ---- rows ------------------------------------------------------------------------------------------------------

const REFUSAL_REASONS = {
  unknown: "unknown code",
  expired: "expired",
  not_yet_valid: "not valid yet",
  below_minimum: "below the minimum basket",
  already_used: "already used",
  not_for_member: "not for this member",
  not_stackable: "cannot be combined with the other coupons",
};

// "SPRING10: below the minimum basket by 2.50 EUR", with the server's sentence as the detail.
export function refusalRow(refusal, { currency, decimals }) {
  const code = refusal.code || refusal.coupon || "Coupon";
  let reason = REFUSAL_REASONS[refusal.reason] || String(refusal.reason || "not applied").replaceAll("_", " ");
  const shortfall = refusal.shortfall;
  if (refusal.reason === "below_minimum" && shortfall != null && !isZeroAmount(shortfall)) {
    const amount = typeof shortfall === "string" ? shortfall : formatMinor(shortfall, decimals);
    reason += ` by ${amount} ${currency}`;
  }
  const detail = refusal.message && refusal.message !== reason ? refusal.message : "";
  return { kind: "refusal", label: `${code}: ${reason}`, value: "", detail, tone: "warning" };
}

function noticeRow(notice) {
  const message = typeof notice === "string" ? notice : notice.message || notice.detail || notice.code || "";
  return { kind: "notice", label: message, value: "", detail: "", tone: "info" };
}

function bonusValue(bonus, currency, decimals) {
  const amount = Number(bonus.amount) || 0;
  if (typeof bonus.amount === "string" && bonus.unit === "cashback") return `+${bonus.amount} ${currency}`;
  if (bonus.unit === "cashback") return `+${formatMinor(amount, decimals)} ${currency}`;
  return `+${plural(amount, bonus.unit === "stamps" ? "stamp" : "point")}`;
}

// A quote's or purchase's rows: { lines, notes, outcome }.
//   lines   the discount lines, in the server's order, each "−2.50 EUR"
//   notes   coupon refusals, then notices (a lowered redemption, an offer out of date, no voucher to use)
//   outcome what the purchase earns and spends
// `programType` ("points", "stamps", "cashback") decides which earnings are worth a row when they are zero.
export function quoteRows(quote, { currency, programType = "points", stampsNeeded = 0, voucherLabel = "" }) {
  const decimals = decimalsOf(quote.amount);
  const lines = (quote.lines || []).map((line) => ({
    kind: line.kind, label: line.label, value: `−${line.amount} ${currency}`, detail: "", tone: "discount",
  }));
  const refusals = quote.coupon_refusals || quote.refusals || [];
  const notices = quote.notices || quote.warnings || [];
  const notes = [...refusals.map((each) => refusalRow(each, { currency, decimals })), ...notices.map(noticeRow)];

  const outcome = [];
  const pointsEarned = Number(quote.points_earned) || 0;
  if (programType === "points" || pointsEarned) {
    outcome.push({ kind: "points_earned", label: "Points earned", value: `+${pointsEarned}`, detail: "",
      tone: "earned" });
  }
  const pointsSpent = (Number(quote.points_redeemed) || 0) + (Number(quote.reward_points) || 0);
  if (pointsSpent) {
    outcome.push({ kind: "points_spent", label: "Points used", value: `−${pointsSpent}`, detail: "", tone: "" });
  }
  const stampsAdded = Number(quote.stamps_added) || 0;
  if (programType === "stamps" || stampsAdded) {
    const of = stampsNeeded ? ` of ${stampsNeeded}` : "";
    const onCard = quote.stamps_after ?? quote.stamps; // the quote's name, and the engine's
    const after = onCard == null ? "" : ` (${onCard}${of} on the card)`;
    outcome.push({ kind: "stamps_added", label: `Stamps added${after}`, value: `+${stampsAdded}`, detail: "",
      tone: "earned" });
  }
  const vouchersIssued = Number(quote.vouchers_issued) || 0;
  if (vouchersIssued) {
    const label = voucherLabel ? `Voucher issued: ${voucherLabel}` : "Voucher issued";
    outcome.push({ kind: "voucher_issued", label, value: `+${vouchersIssued}`, detail: "",
      tone: "earned" });
  }
  if (programType === "cashback" || !isZeroAmount(quote.cashback_earned)) {
    const earned = quote.cashback_earned == null ? formatMinor(0, decimals) : quote.cashback_earned;
    outcome.push({ kind: "cashback_earned", label: "Cashback earned", value: `+${earned} ${currency}`,
      detail: "", tone: "earned" });
  }
  for (const bonus of quote.bonuses || []) {
    outcome.push({ kind: "bonus", label: bonus.label || "Bonus", value: bonusValue(bonus, currency, decimals),
      detail: "", tone: "earned" });
  }
  return { lines, notes, outcome };
}

// The receipt: the committed purchase's own lines and earnings, and what only the quote said (refusals,
// notices, bonuses) when the purchase's answer does not repeat it. The confirm sent exactly what was quoted.
export function receiptRows(purchase, quote, options) {
  const merged = { ...(quote || {}) };
  for (const [key, value] of Object.entries(purchase || {})) {
    if (value !== undefined && value !== null) merged[key] = value;
  }
  return quoteRows(merged, options);
}

// What the member panel shows besides the name: ["120 points", "4 of 10 stamps", "1 voucher", "2.50 EUR
// cashback"]. Points show in a points program, or when the card holds some.
export function balanceFigures(card, { currency, programType = "points", stampsNeeded = 0 }) {
  const figures = [];
  const points = Number(card.points) || 0;
  if (programType === "points" || points) figures.push({ kind: "points", text: plural(points, "point") });
  if (card.stamps != null && (programType === "stamps" || card.stamps)) {
    const needed = stampsNeeded ? ` of ${stampsNeeded}` : "";
    figures.push({ kind: "stamps", text: `${card.stamps}${needed} stamps` });
  }
  if (Number(card.vouchers) > 0) figures.push({ kind: "vouchers", text: plural(Number(card.vouchers), "voucher") });
  if (card.cashback != null && (programType === "cashback" || !isZeroAmount(card.cashback))) {
    figures.push({ kind: "cashback", text: `${card.cashback} ${currency} cashback` });
  }
  return figures;
}

// The reward select's options: "Free coffee — 150 points", disabled when the card holds too few points.
export function rewardOptions(card) {
  const points = Number(card.points) || 0;
  return (card.rewards || []).map((reward) => ({
    value: String(reward.id),
    text: `${reward.name} — ${plural(Number(reward.points_cost) || 0, "point")}`,
    disabled: (Number(reward.points_cost) || 0) > points,
  }));
}
