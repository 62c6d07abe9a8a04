// Copy buttons of the settings pages (progressive: the text stays selectable without it).
document.addEventListener("click", function (ev) {
  var button = ev.target.closest && ev.target.closest("button.copy");
  if (!button) return;
  var source = document.getElementById(button.getAttribute("data-copy"));
  if (!source || !navigator.clipboard) return;
  navigator.clipboard.writeText(source.textContent).then(function () {
    button.textContent = "Copied";
    setTimeout(function () { button.textContent = "Copy"; }, 2000);
  }, function () {});
});
