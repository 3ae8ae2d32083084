// Signing in with the user's own wallet: an EIP-1193 provider the browser injects as `window.ethereum`
// (a wallet extension). The page asks it for the user's address (`eth_requestAccounts`) and for an
// EIP-191 signature (`personal_sign`) over each change the user makes; the key stays in the wallet and
// nothing secret reaches the node, which checks each signature itself.

import { checksumAddress, hex, utf8 } from "./crypto.js";

export const NO_WALLET = "no wallet in this browser: install one, or use `r1os app deploy`";
const REMEMBER = "r1os-wallet-signed-in"; // sessionStorage: this tab signed in (no address or key kept)

export class WalletError extends Error {}

function reason(err) {
  if (err && err.code === 4001) return "you declined the request in your wallet";
  if (err && err.code === -32002) return "your wallet is already asking: answer it there";
  const text = err && typeof err.message === "string" ? err.message : String(err);
  return `the wallet refused: ${text.slice(0, 200)}`;
}

export class Wallet {
  constructor() {
    this.address = null; // EIP-55, while signed in
    this.listeners = new Set();
    this.watching = false;
  }

  get provider() {
    const p = window.ethereum;
    return p && typeof p.request === "function" ? p : null;
  }

  get present() {
    return this.provider !== null;
  }

  onChange(fn) {
    this.listeners.add(fn);
  }

  set(address) {
    const before = this.address;
    this.address = address ? checksumAddress(address) : null;
    if (this.address) sessionStorage.setItem(REMEMBER, "1");
    else sessionStorage.removeItem(REMEMBER);
    if (before !== this.address) for (const fn of this.listeners) fn(this.address);
  }

  watch() {
    const p = this.provider;
    if (this.watching || !p || typeof p.on !== "function") return;
    this.watching = true;
    // the user switched accounts (or locked the wallet) in the wallet itself
    p.on("accountsChanged", (accounts) => this.set(Array.isArray(accounts) && accounts.length ? accounts[0] : null));
  }

  /** Ask the wallet for the user's address (it may show a prompt). */
  async signIn() {
    const p = this.provider;
    if (!p) throw new WalletError(NO_WALLET);
    let accounts;
    try {
      accounts = await p.request({ method: "eth_requestAccounts" });
    } catch (err) {
      throw new WalletError(reason(err));
    }
    const address = Array.isArray(accounts) ? checksumAddress(accounts[0]) : null;
    if (!address) throw new WalletError("the wallet gave no account");
    this.watch();
    this.set(address);
    return address;
  }

  /** Signed in again without a prompt if this tab was (`eth_accounts` asks nothing of the user). */
  async resume() {
    const p = this.provider;
    if (!p || !sessionStorage.getItem(REMEMBER)) return;
    try {
      const accounts = await p.request({ method: "eth_accounts" });
      this.watch();
      this.set(Array.isArray(accounts) && accounts.length ? accounts[0] : null);
    } catch {
      this.set(null);
    }
  }

  signOut() {
    this.set(null);
  }

  async personalSign(message) {
    const p = this.provider;
    if (!p) throw new WalletError(NO_WALLET);
    if (!this.address) throw new WalletError("sign in with your wallet first");
    let sig;
    try {
      sig = await p.request({ method: "personal_sign", params: [`0x${hex(message)}`, this.address] });
    } catch (err) {
      throw new WalletError(reason(err));
    }
    if (typeof sig !== "string" || !/^0x[0-9a-fA-F]{130}$/.test(sig)) throw new WalletError("the wallet gave no signature");
    return sig.toLowerCase();
  }

  /** EIP-191 signature over readable text (the wallet shows the text). */
  signText(text) {
    return this.personalSign(utf8(text));
  }

  /** EIP-191 signature over raw bytes (the wallet shows them as hex). */
  signBytes(bytes) {
    return this.personalSign(bytes);
  }
}
