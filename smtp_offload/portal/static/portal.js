/* The upload page's script: drag and drop, a progress bar per file, resumable uploads (tus),
   each file's result in plain words, and Send without leaving the page. The page works
   without it (a plain form); this only makes it better. Every progress step is also a
   "portal:progress" event on document ({name, bytesSent, bytesTotal}). */
(function () {
  "use strict";
  var form = document.getElementById("upload");
  if (!form || !window.tus || !window.tus.isSupported || !window.fetch) { return; }
  document.documentElement.className += " js";

  var input = document.getElementById("files");
  var drop = document.getElementById("drop");
  var list = document.getElementById("file-list");
  var sendButton = document.getElementById("send");
  var sendForm = document.getElementById("send-form");
  var delivery = document.getElementById("delivery");
  var chunk = parseInt(form.getAttribute("data-chunk"), 10);
  var maxFile = parseInt(form.getAttribute("data-max-file"), 10);
  var accepted = (form.getAttribute("data-accepted") || "").split(",").filter(Boolean);
  var statusUrl = form.getAttribute("data-status");
  var running = 0;
  var lastStatus = null;

  function size(n) {  // as the server writes sizes (units.human_size): "512 bytes", "38.1 MiB"
    if (n < 1024) { return n + " bytes"; }
    var units = ["KiB", "MiB", "GiB"], i = -1;
    do { n /= 1024; i++; } while (Math.round(n * 10) / 10 >= 1024 && i < units.length - 1);
    return n.toFixed(1) + " " + units[i];
  }

  function row(file) {
    var none = list.querySelector(".none");
    if (none) { none.parentNode.removeChild(none); }
    var li = document.createElement("li");
    li.className = "file uploading";
    var name = document.createElement("span");
    name.className = "name";
    name.textContent = file.name;
    var sz = document.createElement("span");
    sz.className = "size";
    sz.textContent = " " + size(file.size) + " ";
    var bar = document.createElement("progress");
    bar.max = 100;
    bar.value = 0;
    bar.setAttribute("aria-label", "Upload of " + file.name);
    var result = document.createElement("span");
    result.className = "result";
    result.textContent = "waiting…";
    li.appendChild(name);
    li.appendChild(sz);
    li.appendChild(bar);
    li.appendChild(result);
    list.appendChild(li);
    return {li: li, bar: bar, result: result};
  }

  function show(r, state, text) {
    r.li.className = "file " + state;
    r.result.textContent = text;
    if (state !== "uploading" && r.bar.parentNode) { r.bar.parentNode.removeChild(r.bar); }
  }

  function extension(name) {
    var dot = name.lastIndexOf(".");
    return dot > 0 ? name.slice(dot + 1).toLowerCase() : "";
  }

  function refusalOf(err) {
    var res = err && err.originalResponse;
    if (res) {
      try {
        var body = JSON.parse(res.getBody());
        if (body && body.message) { return body.message; }
      } catch (e) { /* not ours: a proxy's page */ }
    }
    return "not sent: the connection failed — please add this file again";
  }

  function add(files) {
    for (var i = 0; i < files.length; i++) {
      var file = files[i];
      var r = row(file);
      var ext = extension(file.name);
      if (accepted.length && accepted.indexOf(ext) < 0) {
        show(r, "refused", "refused: " + (ext ? "." + ext + " files" : "files without an extension") +
             " are not accepted here — please send one of: " + accepted.slice(0, 12).join(", ").toUpperCase());
      } else if (file.size > maxFile) {
        show(r, "refused", "refused: this file is larger than " + size(maxFile) + ", the most one file may be");
      } else if (file.size === 0) {
        show(r, "refused", "refused: this file is empty — please choose the file again");
      } else {
        start(file, r);
      }
    }
    update();
  }

  function start(file, r) {
    running++;
    var upload = new window.tus.Upload(file, {
      // Absolute: tus resolves the server's relative Location against it.
      endpoint: new URL(form.getAttribute("data-tus"), window.location.href).href,
      chunkSize: chunk,
      retryDelays: [0, 1000, 2000, 4000, 8000, 15000, 30000, 30000, 60000, 60000, 60000],
      metadata: {filename: file.name, filetype: file.type || ""},
      removeFingerprintOnSuccess: true,
      onProgress: function (sent, total) {
        r.bar.value = total ? Math.floor(sent * 100 / total) : 0;
        r.result.textContent = "uploading… " + r.bar.value + "%";
        document.dispatchEvent(new CustomEvent("portal:progress",
          {detail: {name: file.name, bytesSent: sent, bytesTotal: total}}));
      },
      onShouldRetry: function (err) {
        var res = err.originalResponse, status = res ? res.getStatus() : 0;
        // A 409 is retried (after a HEAD) only when it is about the offset; the server's other
        // refusals are final and shown at once.
        var conflict = status === 409 && /offset_mismatch|"complete"/.test(res.getBody() || "");
        var retry = !status || conflict || status === 423 || status === 429 || status >= 500;
        if (retry) { r.result.textContent = "connection interrupted — resuming where it stopped…"; }
        return retry;
      },
      onError: function (err) {
        running--;
        show(r, "refused", refusalOf(err));
        update();
      },
      onSuccess: function () {
        r.result.textContent = "checking…";
        var uid = upload.url.split("/").pop();
        settle(uid, r, 0);
      }
    });
    upload.findPreviousUploads().then(function (previous) {
      if (previous.length) { upload.resumeFromPreviousUpload(previous[0]); }
      upload.start();
    });
  }

  function settle(uid, r, round) {
    refresh().then(function (data) {
      var files = data && Array.isArray(data.files) ? data.files : [];
      var f = files.filter(function (x) { return x.upload === uid; })[0];
      if (f && f.state !== "checking" && f.state !== "uploading") {
        running--;
        show(r, f.state, f.message || f.state);
        update();
      } else if (round < 120) {
        setTimeout(function () { settle(uid, r, round + 1); }, 500);
      } else {
        running--;
        show(r, "failed", "not confirmed yet — reload this page in a minute to see this file's result");
        update();
      }
    });
  }

  function refresh() {
    return fetch(statusUrl, {headers: {Accept: "application/json"}, credentials: "same-origin"})
      .then(function (res) {
        if (!res.ok) { throw new Error("status " + res.status); }
        return res.json();
      })
      .then(function (data) { lastStatus = data; return data; })
      .catch(function () { return lastStatus; });  // a passing error: the next round asks again
  }

  function update() {
    if (!sendButton) { return; }
    var received = list.querySelectorAll(".file.received").length;
    sendButton.disabled = running > 0 || received === 0;
  }

  function send(ev) {
    ev.preventDefault();
    sendButton.disabled = true;
    delivery.textContent = "Sending your files to your case…";
    fetch(sendForm.getAttribute("action"), {method: "POST", headers: {Accept: "application/json"},
                                            credentials: "same-origin"})
      .then(function (res) { return res.json(); })
      .then(function (data) {
        delivery.textContent = data.message;
        if (data.state === "sent") {
          form.parentNode.removeChild(form);
          sendForm.parentNode.removeChild(sendForm);
        } else if (data.state === "retrying" || data.state === "sending") {
          form.parentNode.removeChild(form);
          sendForm.parentNode.removeChild(sendForm);
          watch();
        } else {
          update();
        }
      })
      .catch(function () {
        delivery.textContent = "Sending failed because of the connection — please press Send again.";
        update();
      });
  }

  function watch() {
    setTimeout(function () {
      refresh().then(function (data) {
        if (data) { delivery.textContent = data.message; }
        if (!data || data.state !== "sent") { watch(); }
      });
    }, 5000);
  }

  input.addEventListener("change", function () { add(input.files); input.value = ""; });
  form.addEventListener("submit", function (ev) { ev.preventDefault(); add(input.files); input.value = ""; });
  ["dragenter", "dragover"].forEach(function (name) {
    drop.addEventListener(name, function (ev) { ev.preventDefault(); drop.className = "drop over"; });
  });
  ["dragleave", "drop"].forEach(function (name) {
    drop.addEventListener(name, function () { drop.className = "drop"; });
  });
  drop.addEventListener("drop", function (ev) { ev.preventDefault(); add(ev.dataTransfer.files); });
  if (sendForm) { sendForm.addEventListener("submit", send); }
  update();
}());
