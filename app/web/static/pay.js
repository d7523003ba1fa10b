// The card step of a checkout. A new card goes through Stripe.js (confirmCardSetup), so its number
// never reaches our server; the server then charges the resulting payment method and may ask for
// 3-D Secure, which Stripe.js shows in place (confirmCardPayment).
(function () {
  "use strict";
  var form = document.getElementById("checkout-form");
  if (!form) { return; }
  var button = document.getElementById("pay-button");
  var statusEl = document.getElementById("payment-status");
  var tryAgain = document.getElementById("try-again");
  var newCard = document.getElementById("new-card");
  var saveBox = document.getElementById("save-card");
  var setupSecret = form.dataset.setupSecret;
  var csrf = document.querySelector('meta[name="csrf-token"]').content;
  var stripe = Stripe(form.dataset.publishableKey);
  var card = null;
  var busy = false;

  if (newCard) {
    card = stripe.elements().create("card");
    card.mount("#card-element");
  }

  function chosenMethod() {
    var checked = form.querySelector('input[name="payment_method"]:checked');
    return checked ? checked.value : "new";
  }

  function showNewCard() {
    if (newCard) { newCard.hidden = chosenMethod() !== "new"; }
  }
  form.addEventListener("change", showNewCard);
  showNewCard();

  function say(text, isError) {
    statusEl.textContent = text;
    statusEl.className = isError ? "notice notice-error" : "notice";
  }

  function fail(text, offerRetry) {
    say(text, true);
    if (offerRetry && tryAgain) { tryAgain.hidden = false; }
    busy = false;
    button.disabled = false;
  }

  function paymentMethodId(setupIntent) {
    var pm = setupIntent.payment_method;
    return typeof pm === "string" ? pm : pm.id;
  }

  async function confirmOnServer(paymentMethod, save) {
    var response = await fetch(form.dataset.confirmUrl, {
      method: "POST",
      credentials: "same-origin",
      headers: {"Content-Type": "application/json", "Accept": "application/json", "X-CSRFToken": csrf},
      body: JSON.stringify({payment_method: paymentMethod, save: save})
    });
    var data = {};
    try { data = await response.json(); } catch (e) { data = {}; }
    if (!data.status) {
      data = {status: "failed", message: "Something went wrong on our side. " +
              "Check Payments to see whether this payment went through before trying again."};
    }
    return data;
  }

  async function pay() {
    var method = chosenMethod();
    var save = false;
    if (method === "new") {
      say("Checking your card…", false);
      var setup = await stripe.confirmCardSetup(setupSecret, {payment_method: {card: card}});
      if (setup.error) {
        // Nothing was charged: the same checkout may try another card.
        fail(setup.error.message || "Your card could not be used.", false);
        return;
      }
      method = paymentMethodId(setup.setupIntent);
      save = !!(saveBox && saveBox.checked);
    }
    say("Paying…", false);
    var result = await confirmOnServer(method, save);
    if (result.status === "requires_action" && result.client_secret) {
      say("Your bank asks you to confirm this payment…", false);
      // Whatever the outcome, the result page asks Stripe and shows it.
      await stripe.confirmCardPayment(result.client_secret);
      window.location.assign(result.redirect);
    } else if (result.status === "failed" || !result.redirect) {
      if (result.retry && tryAgain) { tryAgain.querySelector("a").href = result.retry; }
      fail(result.message || "The payment did not go through.", true);
    } else {
      // succeeded, processing, submitted (outcome not known yet) or a repeated confirm.
      say(result.status === "succeeded" ? "Paid. Loading your receipt…" : "Processing…", false);
      window.location.assign(result.redirect);
    }
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    if (busy) { return; }
    busy = true;
    button.disabled = true;
    pay().catch(function () {
      fail("The payment could not be sent. Check your connection and try again.", true);
    });
  });
})();
