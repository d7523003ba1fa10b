// The pay form: the total follows the amounts as they are typed. Amounts are added in minor
// units (integers), never as floating-point money; the server checks every amount again.
(function () {
  "use strict";
  var form = document.getElementById("pay-form");
  var totalEl = document.getElementById("pay-total");
  if (!form || !totalEl) { return; }
  var places = parseInt(form.dataset.places || "2", 10);
  var symbol = form.dataset.symbol || "";
  var inputs = form.querySelectorAll("input.amount-input");

  function toMinor(text) {
    var cleaned = String(text).replace(/[\s,$€£¥]/g, "");
    if (!/^\d*(\.\d*)?$/.test(cleaned) || cleaned === "" || cleaned === ".") { return null; }
    var parts = cleaned.split(".");
    var frac = (parts[1] || "");
    if (frac.length > places) { return null; }
    while (frac.length < places) { frac += "0"; }
    return parseInt(parts[0] || "0", 10) * Math.pow(10, places) + (places ? parseInt(frac, 10) : 0);
  }

  function format(minor) {
    var whole = Math.floor(minor / Math.pow(10, places)).toString().replace(/\B(?=(\d{3})+(?!\d))/g, ",");
    if (!places) { return symbol + whole; }
    var frac = (minor % Math.pow(10, places)).toString();
    while (frac.length < places) { frac = "0" + frac; }
    return symbol + whole + "." + frac;
  }

  function update() {
    var sum = 0;
    var ok = true;
    inputs.forEach(function (input) {
      var value = toMinor(input.value);
      if (value === null) { ok = false; } else { sum += value; }
    });
    totalEl.textContent = ok ? format(sum) : "—";
    var note = document.getElementById("pay-total-note");
    if (note) { note.hidden = ok; }
  }
  inputs.forEach(function (input) { input.addEventListener("input", update); });
  update();
})();
