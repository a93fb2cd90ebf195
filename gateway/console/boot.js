// The first thing the console's page runs, before its modules load: with a browser session
// already (no login code in the link), open the WebSocket and ask for the sessions list, so
// that they travel while app.js and Preact are fetched and compiled. app.js adopts the socket
// (Connection.connect) and replays what arrived meanwhile. An async classic script: it runs as
// soon as it is fetched, without waiting for the stylesheet; if app.js came first (it sets
// window.berthBoot to null), this does nothing.
(function () {
  'use strict';
  if (window.berthBoot !== undefined) return;
  if (/login=berthl_/.test(location.hash) || typeof WebSocket !== 'function') return;
  var url = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/v1/ws';
  var ws = new WebSocket(url, 'berth.v1.json');
  var boot = { ws: ws, received: [], listId: 'boot-list' };
  ws.onmessage = function (e) { boot.received.push(e); };
  // A listener, not onopen: app.js sets its own onopen when it adopts a socket still connecting.
  ws.addEventListener('open', function () {
    ws.send(JSON.stringify({ op: 'call', id: boot.listId, verb: 'session.list', args: { limit: 10000 } }));
  });
  window.berthBoot = boot;
})();
