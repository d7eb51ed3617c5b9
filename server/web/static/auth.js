// Sign in / create an account.
import * as session from "./session.js";
import { h } from "./ui.js";

export function authView(onSignedIn) {
  let mode = "signin";
  const name = h("input", { name: "display_name", placeholder: "Ana Petrova", autocomplete: "name",
    "data-testid": "name", maxlength: 80 });
  const email = h("input", { name: "email", type: "email", placeholder: "you@example.com",
    autocomplete: "email", required: true, "data-testid": "email" });
  const password = h("input", { name: "password", type: "password", placeholder: "8 characters or more",
    minlength: 8, required: true, autocomplete: "current-password", "data-testid": "password" });
  const nameField = h("label", { class: "field", hidden: true }, h("span", {}, "Your name"), name);
  const error = h("p", { class: "form-error", "data-testid": "auth-error" });
  const submit = h("button", { class: "btn btn-primary btn-block", type: "submit", "data-testid": "auth-submit" }, "Sign in");
  const tabs = ["signin", "signup"].map((m) =>
    h("button", { type: "button", class: "tab", "data-mode": m, "data-testid": `tab-${m}`,
      onclick: () => setMode(m) }, m === "signin" ? "Sign in" : "Create account"));

  function setMode(next) {
    mode = next;
    for (const tab of tabs) tab.classList.toggle("active", tab.dataset.mode === mode);
    nameField.hidden = mode !== "signup";
    name.required = mode === "signup";
    password.autocomplete = mode === "signup" ? "new-password" : "current-password";
    submit.textContent = mode === "signup" ? "Create account" : "Sign in";
    error.textContent = "";
  }

  async function onSubmit(event) {
    event.preventDefault();
    submit.disabled = true;
    error.textContent = "";
    try {
      if (mode === "signup") await session.signUp(email.value.trim(), password.value, name.value.trim());
      else await session.signIn(email.value.trim(), password.value);
      onSignedIn();
    } catch (err) {
      const field = Array.isArray(err.details) ? err.details[0]?.message : "";
      error.textContent = field ? `${err.message}: ${field}` : err.message;
    } finally {
      submit.disabled = false;
    }
  }

  setMode("signin");
  return h("section", { class: "auth" },
    h("div", { class: "auth-hero" },
      h("h1", {}, "Where to? ", h("span", { class: "accent" }, "Share the ride.")),
      h("p", { class: "lead" }, "Kuda is the carpooling board of a small city. Everything on it is live: " +
        "new rides, seats, bookings, chat and notifications arrive the moment they happen."),
      h("ul", { class: "bullets" },
        h("li", {}, "Seats update on every screen as they are booked"),
        h("li", {}, "Chat with your driver, see who is typing and who is here"),
        h("li", {}, "Lose the network, come back: nothing missed, nothing twice"))),
    h("form", { class: "card auth-card", onsubmit: onSubmit, "data-testid": "auth-form" },
      h("div", { class: "tabs" }, tabs),
      nameField,
      h("label", { class: "field" }, h("span", {}, "Email"), email),
      h("label", { class: "field" }, h("span", {}, "Password"), password),
      error,
      submit));
}
