// Preload for Portkey's gateway under scripts/bench.py (`node --require` this file): a listen()
// that names no host binds 127.0.0.1 instead of every interface, so the benchmark stays on
// loopback. Portkey's start script calls listen() with a port only.
"use strict";
const net = require("net");
const LOOPBACK = "127.0.0.1";
const listen = net.Server.prototype.listen;

net.Server.prototype.listen = function (...args) {
  const first = args[0];
  if (args.length === 0 || typeof first === "function") {
    args.unshift(0, LOOPBACK);
  } else if (first !== null && typeof first === "object") {
    if (first.path === undefined && first.fd === undefined && first.handle === undefined && !first.host) {
      args[0] = Object.assign({}, first, { host: LOOPBACK });
    }
  } else if (typeof first === "number" || (typeof first === "string" && /^\d+$/.test(first))) {
    if (args.length > 1 && (args[1] === undefined || args[1] === null || args[1] === "")) {
      args[1] = LOOPBACK;
    } else if (typeof args[1] !== "string") {
      args.splice(1, 0, LOOPBACK);
    }
  }
  return listen.apply(this, args);
};
