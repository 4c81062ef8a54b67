"use strict";
// Plugin packages on the dashboard: install one (a package file and its sha256, sent as a
// multipart upload to POST /api/plugins/install) and uninstall one (DELETE /api/plugins/ID).
// Loaded after app.js, whose helpers it uses (el, bdi, request, updateRow). The
// server's text (a refusal, a plugin id) only ever reaches the page as text.

async function submitPackage(event) {
  event.preventDefault();
  const message = $("#package-message");
  const file = $("#package-file").files[0];
  if (!file) {
    message.className = "form-msg error";
    message.textContent = "choose a package file (.tar.gz, .tgz, .zip, .js or .ts)";
    return;
  }
  const form = new FormData();
  form.append("file", file, file.name);
  const sha = $("#package-sha256").value.trim();
  if (sha) form.append("sha256", sha);
  const button = $("#package-submit");
  button.disabled = true;
  message.className = "form-msg muted";
  message.textContent = "installing…";
  try {
    const report = await request("POST", "/api/plugins/install", form);
    message.className = "form-msg";
    message.replaceChildren("installed ", bdi(report.id), "@", bdi(report.version || "?"),
      ` (${report.state || "stored"})`);
    $("#package-form").reset();
    $("#package-install").hidden = true;
  } catch (e) {
    message.className = "form-msg error";
    message.replaceChildren(bdi(e.message));
  } finally {
    button.disabled = false;
  }
}

/** Uninstall the row's plugin: the next poll of the plugins takes its row away. */
async function uninstallPlugin(row) {
  if (!confirm(`Uninstall ${row.id}? Its files are removed and its workers stop.`)) return;
  row.message.className = "action-msg muted";
  row.message.textContent = "uninstalling…";
  try {
    await request("DELETE", `/api/plugins/${enc(row.id)}`);
    row.message.textContent = "uninstalled";
    row.busy = true;  // its buttons stay off until the row goes
    updateRow(row, row.info, row.target);
  } catch (e) {
    row.message.className = "action-msg error";
    row.message.replaceChildren(bdi(e.message));
  }
}

/** The buttons app.js adds to each plugin row after its own. */
function packageButtons(row) {
  const button = el("button", { type: "button", text: "uninstall", dataset: { action: "uninstall" },
    title: "remove an installed package (a plugin placed by hand is refused)",
    onclick: () => uninstallPlugin(row) });
  row.buttons.uninstall = button;
  return [button];
}

function setupPackages() {
  $("#package-install-toggle").addEventListener("click", () => {
    $("#package-install").hidden = !$("#package-install").hidden;
    $("#package-message").textContent = "";
  });
  $("#package-cancel").addEventListener("click", () => { $("#package-install").hidden = true; });
  $("#package-form").addEventListener("submit", submitPackage);
}

setupPackages();
