// Saving a card or bank account without paying: Stripe.js confirms a SetupIntent (the card number
// goes to Stripe only; a bank account is picked in Stripe's own dialog, then confirmed with the
// debit authorization shown on the page), then the resulting payment method id is posted to our
// server, which reads it back from Stripe before saving it.
(function () {
  "use strict";
  var form = document.getElementById("add-method-form");
  if (!form) { return; }
  var statusEl = document.getElementById("method-status");
  var button = document.getElementById("save-method-button");
  var csrf = document.querySelector('meta[name="csrf-token"]').content;
  var stripe = Stripe(form.dataset.publishableKey);
  var isBank = form.dataset.method === "bank";
  var card = null;
  if (!isBank) {
    card = stripe.elements().create("card");
    card.mount("#card-element");
  }

  function say(text, isError) {
    statusEl.textContent = text;
    statusEl.className = isError ? "notice notice-error" : "notice";
  }

  // Returns the confirmed SetupIntent, or null after saying why not.
  async function setUpBank() {
    var secret = form.dataset.setupSecret;
    var name = document.getElementById("account-holder").value.trim();
    var email = document.getElementById("account-email").value.trim();
    if (!name) {
      say("Enter the account holder's name.", true);
      document.getElementById("account-holder").focus();
      return null;
    }
    var billing = {name: name};
    if (email) { billing.email = email; }
    say("Choose your bank account…", false);
    var collected = await stripe.collectBankAccountForSetup({
      clientSecret: secret,
      params: {payment_method_type: "us_bank_account", payment_method_data: {billing_details: billing}}
    });
    if (collected.error) {
      say(collected.error.message || "The bank account could not be used.", true);
      return null;
    }
    if (collected.setupIntent.status === "requires_payment_method") {
      say("No bank account was chosen.", true);
      return null;
    }
    say("Confirming your bank account…", false);
    var confirmed = await stripe.confirmUsBankAccountSetup(secret);
    if (confirmed.error) {
      say(confirmed.error.message || "The bank account could not be confirmed.", true);
      return null;
    }
    if (confirmed.setupIntent.status !== "succeeded") {
      say("Your bank account needs to be verified before it can be used.", true);
      return null;
    }
    return confirmed.setupIntent;
  }

  async function setUpCard() {
    say("Checking your card…", false);
    var setup = await stripe.confirmCardSetup(form.dataset.setupSecret, {payment_method: {card: card}});
    if (setup.error) {
      say(setup.error.message || "Your card could not be saved.", true);
      return null;
    }
    return setup.setupIntent;
  }

  async function save() {
    var setupIntent = isBank ? await setUpBank() : await setUpCard();
    if (!setupIntent) { return false; }
    var setup = {setupIntent: setupIntent};
    var pm = setup.setupIntent.payment_method;
    var response = await fetch(form.dataset.saveUrl, {
      method: "POST",
      credentials: "same-origin",
      headers: {"Content-Type": "application/json", "Accept": "application/json", "X-CSRFToken": csrf},
      body: JSON.stringify({payment_method: typeof pm === "string" ? pm : pm.id})
    });
    var data = {};
    try { data = await response.json(); } catch (e) { data = {}; }
    if (data.status === "saved" && data.redirect) {
      window.location.assign(data.redirect);
      return true;
    }
    say(data.message || "It could not be saved. Try again.", true);
    return false;
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    button.disabled = true;
    save().then(function (done) { if (!done) { button.disabled = false; } }).catch(function () {
      say("The card could not be sent. Check your connection and try again.", true);
      button.disabled = false;
    });
  });
})();
