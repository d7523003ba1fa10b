// The invoice list: on a phone the filters start folded behind their summary line, so the
// invoices are on the first screen; with filters in use (or an error to show) they stay open.
// Without JavaScript the panel is simply open.
(function () {
  "use strict";
  var panel = document.getElementById("filter-panel");
  if (!panel || !window.matchMedia) { return; }
  var phone = window.matchMedia("(max-width: 47.99rem)");
  function fit() {
    panel.open = !phone.matches || panel.dataset.narrowed === "yes";
  }
  fit();
  if (phone.addEventListener) { phone.addEventListener("change", fit); }
})();
