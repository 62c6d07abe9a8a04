// Demo chat: when the chat closes, ask the post-chat question through the widget's API.
document.getElementById("end-chat").addEventListener("click", function () {
  document.getElementById("chat-state").textContent = "Chat ended.";
  this.disabled = true;
  if (window.Closeloop) window.Closeloop.show({ moment: "post_chat", channel: "chat" });
});
