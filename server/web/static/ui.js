// Small DOM helpers shared by the demo's views.

/** h("div", {class: "x", onclick: fn, "data-testid": "y"}, child, [children], "text") */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export function toast(message, kind = "info") {
  const box = document.getElementById("toasts");
  const item = h("div", { class: `toast toast-${kind}`, "data-testid": "toast" }, message);
  box.append(item);
  while (box.children.length > 2) box.firstChild.remove();
  setTimeout(() => item.classList.add("toast-out"), 3200);
  setTimeout(() => item.remove(), 3700);
}

const DAY = new Intl.DateTimeFormat(undefined, { weekday: "short", day: "numeric", month: "short" });
const TIME = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });

export function fmtDeparture(iso) {
  const d = new Date(iso);
  return { day: DAY.format(d), time: TIME.format(d) };
}

export function fmtClock(iso) {
  return TIME.format(new Date(iso));
}

export function fmtPrice(price, currency) {
  if (price === null || price === undefined) return "Free";
  const symbol = { RUB: "₽", EUR: "€", USD: "$" }[currency] ?? currency;
  return `${Number(price).toLocaleString()} ${symbol}`;
}

export function initials(name) {
  return (name || "?").split(/\s+/).filter(Boolean).slice(0, 2).map((w) => w[0].toUpperCase()).join("");
}

/** A stable colour per user id, for avatars. */
export function hue(id) {
  return (Number(id) * 137) % 360;
}

export function avatar(user, size = "") {
  return h("span", { class: `avatar ${size}`, style: `--hue:${hue(user.id)}`, title: user.display_name },
    initials(user.display_name));
}

export function clear(el) {
  while (el.firstChild) el.firstChild.remove();
  return el;
}

/** Replace an element's children (null, false and undefined are skipped). */
export function fill(el, ...children) {
  append(clear(el), children);
  return el;
}
