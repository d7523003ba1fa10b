// The pay form: the total follows the amounts as they are typed and the method chosen, with the
// card surcharge shown before anyone pays. Amounts are added in minor units (integers), never as
// floating-point money; the server works every figure out again (app.core.surcharge) and the
// checkout page shows the one it charges.
(function () {
  "use strict";
  var form = document.getElementById("pay-form");
  var totalEl = document.getElementById("pay-total");
  if (!form || !totalEl) { return; }
  var places = parseInt(form.dataset.places || "2", 10);
  var symbol = form.dataset.symbol || "";
  var inputs = form.querySelectorAll("input.amount-input");
  var basisPoints = form.dataset.surchargeBp ? parseInt(form.dataset.surchargeBp, 10) : 0;
  var cap = form.dataset.surchargeCap ? parseInt(form.dataset.surchargeCap, 10) : null;
  var invoicesEl = document.getElementById("pay-invoices-total");
  var surchargeEl = document.getElementById("pay-surcharge");
  var surchargeLine = document.getElementById("pay-surcharge-line");

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

  function chosenMethod() {
    var picked = form.querySelector('input[name="method"]:checked') ||
                 form.querySelector('input[type="hidden"][name="method"]');
    return picked ? picked.value : "card";
  }

  // The same rule as app.core.surcharge.surcharge_for: basis points rounded half to even, the cap,
  // and a three-decimal currency kept to two places.
  function surcharge(amount) {
    if (!basisPoints || chosenMethod() !== "card" || amount <= 0) { return 0; }
    var product = amount * basisPoints;
    var fee = Math.floor(product / 10000);
    var rest = product - fee * 10000;
    if (rest * 2 > 10000 || (rest * 2 === 10000 && fee % 2 === 1)) { fee += 1; }
    if (cap !== null) { fee = Math.min(fee, cap); }
    if (places === 3) { fee -= fee % 10; }
    return Math.max(0, fee);
  }

  function update() {
    var sum = 0;
    var ok = true;
    if (inputs.length) {
      inputs.forEach(function (input) {
        var value = toMinor(input.value);
        if (value === null) { ok = false; } else { sum += value; }
      });
    } else {
      sum = parseInt(form.dataset.invoicesTotal || "0", 10);
    }
    var fee = ok ? surcharge(sum) : 0;
    if (invoicesEl) { invoicesEl.textContent = ok ? format(sum) : "—"; }
    if (surchargeEl) { surchargeEl.textContent = ok ? format(fee) : "—"; }
    if (surchargeLine) { surchargeLine.hidden = chosenMethod() !== "card"; }
    totalEl.textContent = ok ? format(sum + fee) : "—";
    var note = document.getElementById("pay-total-note");
    if (note) { note.hidden = ok; }
  }
  inputs.forEach(function (input) { input.addEventListener("input", update); });
  form.querySelectorAll('input[name="method"]').forEach(function (radio) {
    radio.addEventListener("change", update);
  });
  update();
})();
