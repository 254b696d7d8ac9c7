/* reviewqueue review screens: countdowns, keyboard shortcuts, and giving a case back
   when the reviewer leaves its page. No inline script anywhere: the pages' CSP allows
   scripts from this server only. Elements declare their key with data-key. */
(function () {
  "use strict";

  function formatSpan(ms) {
    var s = Math.floor(Math.abs(ms) / 1000);
    var d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600);
    var m = Math.floor((s % 3600) / 60), sec = s % 60;
    if (d) return d + "d " + h + "h";
    if (h) return h + "h " + String(m).padStart(2, "0") + "m";
    return m + "m " + String(sec).padStart(2, "0") + "s";
  }

  function tick() {
    var now = Date.now();
    document.querySelectorAll("time[data-countdown]").forEach(function (el) {
      var at = Date.parse(el.getAttribute("datetime"));
      if (isNaN(at)) return;
      var left = at - now;
      el.textContent = left >= 0 ? "in " + formatSpan(left) : formatSpan(left) + " overdue";
      el.classList.toggle("late", left < 0);
      if (el.hasAttribute("data-lease") && left < 0) leaseLost();
    });
  }

  function leaseLost() {
    var review = document.getElementById("review");
    if (!review || review.classList.contains("lost")) return;
    review.classList.add("lost");
    review.querySelectorAll(".actions button, .panel button").forEach(function (b) {
      b.disabled = true;
    });
  }

  var leaving = false;

  function openPanel(id, focusSelector) {
    document.querySelectorAll(".panel[id$='-panel']").forEach(function (p) {
      p.hidden = p.id !== id;
    });
    var panel = document.getElementById(id);
    if (!panel) return null;
    panel.hidden = false;
    var target = panel.querySelector(focusSelector || "input[type=radio], input[type=text]");
    if (target) target.focus();
    return panel;
  }

  function closePanels() {
    document.querySelectorAll(".panel[id$='-panel']").forEach(function (p) {
      p.hidden = true;
    });
    if (document.activeElement) document.activeElement.blur();
  }

  function chooseLabel(label) {
    var review = document.getElementById("review");
    if (!review) return;
    if (label === review.getAttribute("data-model-label")) {
      document.getElementById("accept").click();
      return;
    }
    var panel = openPanel("override-panel", "input[name=reason_code]");
    if (!panel) return;
    panel.querySelectorAll("input[name=label]").forEach(function (r) {
      r.checked = r.value === label;
    });
  }

  function activate(el) {
    if (el.disabled) return;
    if (el.hasAttribute("data-label")) {
      chooseLabel(el.getAttribute("data-label"));
    } else if (el.hasAttribute("data-panel")) {
      var panel = openPanel(el.getAttribute("data-panel"));
      if (panel && el.id === "override") {
        var labels = panel.querySelectorAll("input[name=label]");
        var model = document.getElementById("review").getAttribute("data-model-label");
        var checked = panel.querySelector("input[name=label]:checked");
        if (!checked) {
          for (var i = 0; i < labels.length; i++) {
            if (labels[i].value !== model) { labels[i].checked = true; break; }
          }
        }
        var reason = panel.querySelector("input[name=reason_code]");
        if (reason) reason.focus();
      }
    } else if (el.type === "radio") {
      el.checked = true;
      el.focus();
    } else {
      el.click();
    }
  }

  function keyName(event) {
    if (event.key === "Enter") return "enter";
    return event.key.length === 1 ? event.key.toLowerCase() : "";
  }

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.key === "Escape") { closePanels(); return; }
    var t = event.target;
    var typing = t && (t.tagName === "TEXTAREA" || t.tagName === "SELECT" ||
      (t.tagName === "INPUT" && t.type !== "radio" && t.type !== "checkbox"));
    if (typing) return;
    var key = keyName(event);
    if (!key) return;
    if (key === "enter" && t && t.closest && t.closest("form, a, button")) return;
    // An open panel's keys first (its label radios), then the page's.
    var scope = document.querySelector(".panel:not([hidden])");
    var el = null;
    if (scope && !scope.id.endsWith("-panel")) scope = null;
    if (scope) el = scope.querySelector('[data-key="' + key + '"]');
    if (!el) el = document.querySelector('[data-key="' + key + '"]');
    if (!el) return;
    event.preventDefault();
    activate(el);
  });

  document.addEventListener("submit", function () { leaving = true; });
  // Once a decision is on its way, no heartbeat for the old lease goes out.
  document.addEventListener("htmx:confirm", function (event) {
    if (leaving) event.preventDefault();
  });

  // Leaving the page (closing the tab, following a link) gives the case back at once,
  // instead of after its lease runs out. Submitting a form (a decision) does not.
  window.addEventListener("pagehide", function () {
    var form = document.getElementById("release-form");
    var review = document.getElementById("review");
    if (leaving || !form || !review || review.classList.contains("lost")) return;
    if (navigator.sendBeacon) navigator.sendBeacon(form.action, new FormData(form));
  });

  document.addEventListener("htmx:afterSwap", function (event) {
    if (event.target && event.target.id === "lease" || document.querySelector("#lease[data-lost]")) {
      if (document.querySelector("#lease[data-lost]")) {
        leaseLost();
        var next = document.getElementById("next-case");
        if (next) { next.disabled = false; next.focus(); }
      }
    }
    tick();
  });

  document.addEventListener("DOMContentLoaded", function () {
    tick();
    setInterval(tick, 1000);
    var panel = document.querySelector(".panel[id$='-panel']:not([hidden])");
    if (panel) {
      var first = panel.querySelector("input[type=radio]:checked, input[type=radio]");
      if (first) first.focus();
    }
  });
})();
