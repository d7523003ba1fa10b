// Confirm a payment the bank held for 3-D Secure: Stripe.js shows the bank's check; whatever the
// outcome, the payment page then asks Stripe and shows the result.
(function () {
  "use strict";
  var form = document.getElementById("authenticate-form");
  if (!form) { return; }
  var button = document.getElementById("confirm-button");
  var statusEl = document.getElementById("authenticate-status");
  var stripe = Stripe(form.dataset.publishableKey);
  form.addEventListener("submit", async function (event) {
    event.preventDefault();
    button.disabled = true;
    statusEl.textContent = "Waiting for your bank…";
    var data = form.dataset.paymentMethod ? {payment_method: form.dataset.paymentMethod} : undefined;
    var result = await stripe.confirmCardPayment(form.dataset.clientSecret, data);
    if (result && result.error) {
      statusEl.textContent = result.error.message || "The bank did not confirm the payment.";
    }
    window.location.assign(form.dataset.doneUrl);
  });
})();
