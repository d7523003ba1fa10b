// Saving a card without paying: Stripe.js confirms a SetupIntent (the card number goes to Stripe
// only), then the resulting payment method id is posted to our server, which reads it back from
// Stripe before saving it.
(function () {
  "use strict";
  var form = document.getElementById("add-method-form");
  if (!form) { return; }
  var statusEl = document.getElementById("method-status");
  var button = document.getElementById("save-method-button");
  var csrf = document.querySelector('meta[name="csrf-token"]').content;
  var stripe = Stripe(form.dataset.publishableKey);
  var card = stripe.elements().create("card");
  card.mount("#card-element");

  function say(text, isError) {
    statusEl.textContent = text;
    statusEl.className = isError ? "notice notice-error" : "notice";
  }

  async function save() {
    say("Checking your card…", false);
    var setup = await stripe.confirmCardSetup(form.dataset.setupSecret, {payment_method: {card: card}});
    if (setup.error) {
      say(setup.error.message || "Your card could not be saved.", true);
      return false;
    }
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
    say(data.message || "The card could not be saved. Try again.", true);
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
