// frad serve's page: plain JavaScript, no build step.  Talks to the JSON API of the same server.
"use strict";
const $ = (id) => document.getElementById(id);
let facePng = null;      // the aligned face of the last upload (base64 PNG)
let lastTop = null;      // its nearest template (name)

function b64ToBlob(b64, type = "image/png") {
  const bin = atob(b64); const a = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) a[i] = bin.charCodeAt(i);
  return new Blob([a], { type });
}

async function post(path, fields) {
  const fd = new FormData();
  for (const [k, v] of Object.entries(fields)) {
    if (v === null || v === undefined) continue;
    if (Array.isArray(v)) fd.append(k, v[0], v[1]); else fd.append(k, v);
  }
  const r = await fetch(path, { method: "POST", body: fd });
  let body = null;
  try { body = await r.json(); } catch (e) { body = { error: `HTTP ${r.status}` }; }
  return { ok: r.ok, status: r.status, body };
}

function showScore(prefix, det) {
  const bar = $(prefix + "score-bar");
  bar.querySelector("div").style.width = `${Math.round(100 * Math.min(1, Math.max(0, det.score)))}%`;
  bar.querySelector("span").style.left = `${Math.round(100 * det.threshold)}%`;
  bar.classList.toggle("flagged", det.flagged);
  $(prefix + "score-text").textContent = `${det.score.toFixed(3)} (threshold ${det.threshold.toFixed(3)})`;
  const v = $(prefix + "verdict");
  v.textContent = det.flagged
    ? (det.policy === "refuse" ? "adversarial: refused" : "adversarial (report-only)") : "natural";
  v.className = "verdict " + det.verdict;
}

// Shows the identity (or "unknown (closest: ...)") and returns the nearest template's name.
function showIdentity(prefix, body) {
  if (body.code === "flagged_adversarial") {
    $(prefix + "identity").textContent = "refused by the detector";
    $(prefix + "similarity").textContent = "-";
    return null;
  }
  const best = body.candidates[0];
  const name = body.identity;
  $(prefix + "identity").textContent = name ?? `unknown (closest: ${best.name})`;
  $(prefix + "similarity").textContent =
    `${best.verification_similarity.toFixed(3)} ${body.verification_metric} (accept >= ${body.verification_threshold.toFixed(3)})`;
  return best.name;
}

async function identifyFile(file) {
  $("status").textContent = "identifying...";
  $("status").className = "";
  const r = await post("/v1/identify", { image: [file, file.name || "upload"], return_face: "true" });
  if (!r.ok && r.body.code !== "flagged_adversarial") {
    $("status").textContent = r.body.error || `HTTP ${r.status}`;
    $("status").className = "error";
    $("result").hidden = true;
    return;
  }
  $("result").hidden = false;
  const face = r.body.face;
  facePng = face && face.png ? face.png : null;
  if (facePng) $("face").src = "data:image/png;base64," + facePng;
  lastTop = showIdentity("", r.body);
  const second = r.body.candidates && r.body.candidates[1];
  $("runner-up").textContent = second ? `${second.name} (${second.verification_similarity.toFixed(3)})` : "-";
  showScore("", r.body.detector);
  $("status").textContent = r.ok ? "done" : r.body.error;
  $("attack-btn").disabled = !facePng;
  $("attack-result").hidden = true;
}

async function loadIdentities() {
  const r = await fetch("/v1/identities");
  const body = await r.json();
  const sel = $("attack-target");
  sel.innerHTML = "";
  const none = document.createElement("option");
  none.value = ""; none.textContent = "(none: untargeted, deep features only)";
  sel.appendChild(none);
  for (const id of body.identities) {
    const o = document.createElement("option"); o.value = id.name; o.textContent = id.name; sel.appendChild(o);
  }
  if (body.identities.length > 1) sel.selectedIndex = 2;
}

async function makeAdversarial() {
  if (!facePng) return;
  const kind = $("attack-kind").value;
  $("attack-btn").disabled = true;
  $("attack-status").textContent = "attacking on the server...";
  $("attack-status").className = "";
  const face = b64ToBlob(facePng);
  const r = await post("/v1/attack", {
    image: [face, "face.png"], aligned: "true", kind, target: $("attack-target").value || null,
    epsilon: $("epsilon").value,
  });
  $("attack-btn").disabled = false;
  if (!r.ok) {
    $("attack-status").textContent = r.body.error || `HTTP ${r.status}`;
    $("attack-status").className = "error";
    return;
  }
  const a = r.body;
  $("adv-original").src = "data:image/png;base64," + a.original_png;
  $("adv-image").src = "data:image/png;base64," + a.adversarial_png;
  $("adv-download").href = "data:image/png;base64," + a.adversarial_png;
  $("adv-perturbation").src = "data:image/png;base64," + a.perturbation_png;
  $("adv-amp").textContent = `perturbation x${a.amplification.toFixed(1)} (L-inf ${a.linf_grey_levels} grey levels)`;
  $("attack-status").textContent = `made in ${a.seconds} s; sending it through identify...`;
  const id = await post("/v1/identify", { image: [b64ToBlob(a.adversarial_png), "adversarial.png"], aligned: "true" });
  $("attack-result").hidden = false;
  if (!id.ok && id.body.code !== "flagged_adversarial") {
    $("attack-status").textContent = id.body.error || `HTTP ${id.status}`;
    $("attack-status").className = "error";
    return;
  }
  const top = showIdentity("adv-", id.body);
  showScore("adv-", id.body.detector);
  $("adv-fooled").textContent = id.body.code === "flagged_adversarial" ? "no answer (refused)"
    : (top !== lastTop ? `yes: nearest identity ${lastTop ?? "-"} -> ${top}` : "no");
  $("attack-status").textContent = "done";
}

$("file").addEventListener("change", (e) => { if (e.target.files[0]) identifyFile(e.target.files[0]); });
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault(); drop.classList.remove("over");
  if (e.dataTransfer.files[0]) identifyFile(e.dataTransfer.files[0]);
});
$("attack-kind").addEventListener("change", () => { $("epsilon").value = $("attack-kind").value === "bim" ? "0.03" : "10"; });
$("attack-btn").addEventListener("click", makeAdversarial);
loadIdentities();
