// The card or bank step of a checkout. A new card goes through Stripe.js (confirmCardSetup), so its
// number never reaches our server; a new bank account likewise (collectBankAccountForSetup, then
// confirmUsBankAccountSetup once the person has read the debit authorization on the page). The
// server then charges the resulting payment method; a card may need 3-D Secure, which Stripe.js
// shows in place (confirmCardPayment); a bank debit stays pending until the bank answers.
(function () {
  "use strict";
  var form = document.getElementById("checkout-form");
  if (!form) { return; }
  var button = document.getElementById("pay-button");
  var statusEl = document.getElementById("payment-status");
  var tryAgain = document.getElementById("try-again");
  var newCard = document.getElementById("new-card");
  var newBank = document.getElementById("new-bank");
  var isBank = form.dataset.method === "ach";
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
    if (newBank) { newBank.hidden = chosenMethod() !== "new"; }
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

  // A new bank account: Stripe.js lets the person pick it, then confirms the SetupIntent (which
  // records the authorization shown on the page). Returns the payment method id, or null.
  async function collectBank() {
    var name = document.getElementById("account-holder").value.trim();
    var email = document.getElementById("account-email").value.trim();
    if (!name) {
      fail("Enter the account holder's name.", false);
      document.getElementById("account-holder").focus();
      return null;
    }
    say("Choose your bank account…", false);
    var billing = {name: name};
    if (email) { billing.email = email; }
    var collected = await stripe.collectBankAccountForSetup({
      clientSecret: setupSecret,
      params: {payment_method_type: "us_bank_account", payment_method_data: {billing_details: billing}}
    });
    if (collected.error) {
      fail(collected.error.message || "The bank account could not be used.", false);
      return null;
    }
    if (collected.setupIntent.status === "requires_payment_method") {
      fail("No bank account was chosen. Nothing was charged.", false);
      return null;
    }
    say("Confirming your bank account…", false);
    var confirmed = await stripe.confirmUsBankAccountSetup(setupSecret);
    if (confirmed.error) {
      fail(confirmed.error.message || "The bank account could not be confirmed.", false);
      return null;
    }
    if (confirmed.setupIntent.status !== "succeeded") {
      fail("Your bank account needs to be verified before it can be used. Nothing was charged.", false);
      return null;
    }
    return paymentMethodId(confirmed.setupIntent);
  }

  async function pay() {
    var method = chosenMethod();
    var save = false;
    if (method === "new" && isBank) {
      method = await collectBank();
      if (!method) { return; }
      save = true;
    } else if (method === "new") {
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
      say(result.status === "succeeded" ? "Paid. Loading your receipt…" : "Pending. Loading your payment…", false);
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
