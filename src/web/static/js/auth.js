// Who uses the page. GET /api/auth says how the server signs people in:
// - auth.mode none: a user id of the person's choice, kept in this browser (the user-id dialog);
// - token / oidc: the sign-in form. The API key (or bearer token) is sent once, in the
//   Authorization header of POST /api/auth/session, which answers with an HttpOnly cookie that
//   signs in every later call; the page then forgets the key: it is never stored, logged or put in
//   a URL. The header shows who is signed in and a Sign out button.
// Any API call answering 401 while signed in means the sign-in ended: the form comes back.

import { api, whenUnauthorized } from "./api.js";
import { $ } from "./dom.js";
import { plural, tokens, usd } from "./format.js";

const USER_KEY = "autobots.user_id";

const MODES = {
  token: {
    label: "API key",
    text: "This server signs people in. Paste your API key: it is sent once to sign this page in, and the page does not keep it.",
    missing: "Paste your API key.",
  },
  oidc: {
    label: "Bearer token",
    text: "This server signs people in with your identity provider. Paste a bearer token (a JWT) from it: it is sent once to sign this page in, and the page does not keep it.",
    missing: "Paste your bearer token.",
  },
};

export class Auth {
  /**
   * hooks.onUser(userId): who uses the page now ("" when nobody), called once at the start and
   * after each change. hooks.toast(message, {error}) shows a passing message.
   */
  constructor(hooks) {
    this.hooks = hooks;
    this.mode = "none";
    this.user = null; // signed in: {user_id, is_admin}
    this.userId = "";
    this.defaultUserId = null;
    this.el = {
      userDialog: $("#user-dialog"),
      userInput: $("#user-input"),
      userError: $("#user-error"),
      userCancel: $("#user-cancel"),
      userDefault: $("#user-default"),
      useDefault: $("#user-use-default"),
      userLabel: $("#user-id-label"),
      changeUser: $("#change-user"),
      signInDialog: $("#signin-dialog"),
      signInText: $("#signin-text"),
      signInNotice: $("#signin-notice"),
      secretLabel: $("#signin-label"),
      secret: $("#signin-secret"),
      signInError: $("#signin-error"),
      signInSubmit: $("#signin-submit"),
      account: $("#account"),
      accountName: $("#account-name"),
      accountAdmin: $("#account-admin"),
      signOut: $("#sign-out"),
    };
    this.wire();
  }

  /** Ask the server how it signs people in, then who is using the page. */
  async start() {
    let info = null;
    try {
      info = await api.authInfo();
    } catch (err) {
      this.hooks.toast?.(`Could not ask the server how it signs people in: ${err.message}`, { error: true });
    }
    this.mode = info?.mode === "token" || info?.mode === "oidc" ? info.mode : "none";
    this.defaultUserId = info?.default_user_id || null;
    if (this.mode === "none") {
      this.userId = localStorage.getItem(USER_KEY) || "";
      if (!this.userId) this.askUser();
    } else if (info.user) {
      this.user = info.user;
      this.userId = info.user.user_id;
    } else {
      this.showSignIn();
    }
    this.render();
    this.hooks.onUser(this.userId);
  }

  get signsIn() {
    return this.mode !== "none";
  }

  /** Someone must say who they are before anything else (a message sent without a user). */
  ask() {
    if (this.signsIn) this.showSignIn();
    else this.askUser();
  }

  /** Dialogs this module keeps open until the person has said who they are. */
  holds(dialog) {
    return dialog === this.el.signInDialog || (dialog === this.el.userDialog && !this.userId);
  }

  wire() {
    const el = this.el;
    el.userDialog.addEventListener("cancel", (event) => {
      if (!this.userId) event.preventDefault(); // a user id is needed before anything else
    });
    el.userCancel.addEventListener("click", () => el.userDialog.close());
    el.useDefault.addEventListener("click", () => {
      el.userInput.value = this.defaultUserId || "";
      el.userDialog.querySelector("form").requestSubmit();
    });
    $("#user-form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.chooseUser();
    });
    el.changeUser.addEventListener("click", () => this.askUser());

    el.signInDialog.addEventListener("cancel", (event) => event.preventDefault());
    $("#signin-form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.signIn();
    });
    el.signOut.addEventListener("click", () => this.signOut());
    whenUnauthorized(() => this.ended());
  }

  render() {
    const el = this.el;
    el.userLabel.textContent = this.userId || (this.signsIn ? "Not signed in" : "No user id");
    el.userLabel.title = this.signsIn ? "Signed in as" : "Your user id";
    el.changeUser.hidden = this.signsIn;
    el.account.hidden = !this.user;
    el.accountName.textContent = this.user?.user_id || "";
    el.accountAdmin.hidden = !this.user?.is_admin;
    el.account.title = this.user ? `Signed in as ${this.user.user_id}` : "";
    if (this.user) this.describeAccount();
  }

  /** Today's usage on the account's tooltip (GET /api/me); only a nicety, so failures are quiet. */
  async describeAccount() {
    try {
      const me = await api.me();
      const today = me.today || {};
      if (this.user?.user_id !== me.user_id) return;
      this.el.account.title = `Signed in as ${me.user_id}${me.is_admin ? " (admin)" : ""}. Today (UTC): ${plural(today.runs || 0, "run")}, ${tokens(today.total_tokens || 0)}, ${usd(today.cost_usd || 0)}.`;
    } catch {
      // the name is shown all the same
    }
  }

  // auth.mode none: a user id of the person's choice -----------------------------------------

  askUser() {
    const el = this.el;
    el.userInput.value = this.userId;
    el.userInput.placeholder = this.defaultUserId || "";
    el.userDefault.hidden = !this.defaultUserId || this.defaultUserId === this.userId;
    el.useDefault.textContent = this.defaultUserId || "";
    el.userError.textContent = "";
    el.userCancel.hidden = !this.userId;
    el.userDialog.showModal();
    el.userInput.focus();
  }

  chooseUser() {
    const el = this.el;
    const value = el.userInput.value.trim();
    if (!value) {
      el.userError.textContent = "Enter a user id, for example your email address.";
      el.userInput.setAttribute("aria-invalid", "true");
      return;
    }
    if (value.length > 200) {
      el.userError.textContent = "A user id has at most 200 characters.";
      return;
    }
    el.userInput.removeAttribute("aria-invalid");
    this.userId = value;
    localStorage.setItem(USER_KEY, value);
    el.userDialog.close();
    this.render();
    this.hooks.onUser(value);
  }

  // token / oidc: signing in and out ---------------------------------------------------------

  showSignIn(notice = "") {
    const el = this.el;
    const words = MODES[this.mode] || MODES.token;
    el.secretLabel.textContent = words.label;
    el.signInText.textContent = words.text;
    el.signInNotice.textContent = notice;
    el.signInNotice.hidden = !notice;
    el.signInError.textContent = "";
    el.secret.value = "";
    el.secret.removeAttribute("aria-invalid");
    if (!el.signInDialog.open) el.signInDialog.showModal();
    el.secret.focus();
  }

  async signIn() {
    const el = this.el;
    const secret = el.secret.value.trim();
    el.secret.value = ""; // sent once, then dropped
    if (!secret) {
      el.signInError.textContent = (MODES[this.mode] || MODES.token).missing;
      el.secret.setAttribute("aria-invalid", "true");
      el.secret.focus();
      return;
    }
    el.signInSubmit.disabled = true;
    el.signInError.textContent = "";
    let info;
    try {
      info = await api.signIn(secret);
    } catch (err) {
      el.signInError.textContent = err.message;
      el.secret.setAttribute("aria-invalid", "true");
      el.secret.focus();
      return;
    } finally {
      el.signInSubmit.disabled = false;
    }
    if (!info?.user) {
      el.signInError.textContent = "The server did not sign you in. Try again.";
      return;
    }
    el.secret.removeAttribute("aria-invalid");
    el.signInDialog.close();
    this.user = info.user;
    this.userId = info.user.user_id;
    this.render();
    this.hooks.onUser(this.userId);
    this.hooks.toast?.(`Signed in as ${this.userId}.`);
  }

  async signOut() {
    this.el.signOut.disabled = true;
    try {
      await api.signOut();
    } catch (err) {
      if (err.status !== 401) {
        this.hooks.toast?.(`Could not sign out: ${err.message}`, { error: true });
        return;
      }
    } finally {
      this.el.signOut.disabled = false;
    }
    this.forget();
    this.showSignIn();
  }

  /** A call answered 401 while signed in: the sign-in expired or was ended elsewhere. */
  ended() {
    if (!this.user) return;
    this.forget();
    this.showSignIn("Your sign-in has ended. Sign in again to go on.");
  }

  forget() {
    this.user = null;
    this.userId = "";
    this.render();
    this.hooks.onUser("");
  }
}
