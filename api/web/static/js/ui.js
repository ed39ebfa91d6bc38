// Small DOM helpers shared by the page's modules, and the banner that shows errors in plain words.

export const $ = (id) => document.getElementById(id);

// An element with properties (textContent, className, hidden, dataset entries via `data`) and children.
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  const { data, attrs, ...rest } = props;
  Object.assign(node, rest);
  for (const [k, v] of Object.entries(data || {})) node.dataset[k] = v;
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const child of children.flat()) {
    if (child !== null && child !== undefined && child !== false) node.append(child);
  }
  return node;
}

export function showError(message) {
  $("banner-text").textContent = message;
  $("banner").hidden = false;
}

export function clearError() {
  $("banner").hidden = true;
  $("banner-text").textContent = "";
}

// What a failure means to the person reading the page: the API's own message, or for a bug in the page, its text.
export function describe(error) {
  if (error && typeof error.message === "string" && error.message) return error.message;
  return "Something went wrong in the page. Reload it to try again.";
}

export function fileName(path) {
  const parts = String(path).split(/[\\/]/);
  return parts[parts.length - 1] || String(path);
}

export function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  const units = ["KB", "MB", "GB"];
  let value = n / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value < 10 ? value.toFixed(1) : Math.round(value)} ${units[unit]}`;
}

export function plural(n, word) {
  return `${n} ${word}${n === 1 ? "" : "s"}`;
}

// Ask a yes/no question in the page's own dialog (keyboard-friendly, and visible in screenshots, unlike confirm()).
export function confirmAction(title, text, okLabel) {
  const dialog = $("confirm");
  $("confirm-title").textContent = title;
  $("confirm-text").textContent = text;
  $("confirm-ok").textContent = okLabel;
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
  });
}
