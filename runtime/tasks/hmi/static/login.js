"use strict";
document.getElementById("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const err = document.getElementById("login-error");
  err.textContent = "";
  const body = {user: document.getElementById("user").value, password: document.getElementById("password").value};
  try {
    const r = await fetch("/api/login", {method: "POST", headers: {"Content-Type": "application/json"},
                                         body: JSON.stringify(body), credentials: "same-origin"});
    if (r.ok) { window.location.assign("/"); return; }
    const j = await r.json().catch(() => ({}));
    err.textContent = j.error || ("login failed (" + r.status + ")");
  } catch (e) {
    err.textContent = "no answer from the controller: " + e;
  }
});
