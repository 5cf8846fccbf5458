// Runs one Bedrock Runtime call with the AWS SDK for JavaScript v3, unchanged and with its default
// request handler (NodeHttp2Handler: h2c with prior knowledge on http://), and prints the result as
// one line of JSON on stdout. Driven by tests/system/test_js_sdk.py.
//
// Job (JSON, as argv[2] or on stdin):
//   {"endpoint": "http://127.0.0.1:8080/bedrock", "op": "converse" | "converseStream" |
//    "invokeModel" | "invokeModelWithResponseStream", "modelId": "...",
//    "messages": [...] (converse*), "body": {...} (invokeModel*), "headers": {"x-bf-vk": "..."}}
//
// Output: {"ok": true, "requestId", "httpStatusCode", ...} with
//   converse: text, usage, stopReason
//   converseStream: events [{t, type, data}]       (t = ms since the call started)
//   invokeModel: body (decoded JSON)
//   invokeModelWithResponseStream: events [{t, type, data}] (each chunk's bytes decoded as JSON)
// or, for an error: {"ok": false, "name", "httpStatusCode", "message", "requestId"}.
import {
  BedrockRuntimeClient,
  ConverseCommand,
  ConverseStreamCommand,
  InvokeModelCommand,
  InvokeModelWithResponseStreamCommand,
} from "@aws-sdk/client-bedrock-runtime";

async function readJob() {
  if (process.argv[2]) return JSON.parse(process.argv[2]);
  const parts = [];
  for await (const chunk of process.stdin) parts.push(chunk);
  return JSON.parse(Buffer.concat(parts).toString("utf8"));
}

function makeClient(job) {
  const client = new BedrockRuntimeClient({
    region: job.region ?? "us-east-1",
    endpoint: job.endpoint,
    credentials: { accessKeyId: "finops-dummy-key", secretAccessKey: "finops-dummy-secret" },
    maxAttempts: 1,
  });
  // What the README documents for virtual keys and environments: add the headers in the build step
  // (before signing, so they are part of the signed request).
  const headers = job.headers ?? {};
  client.middlewareStack.add(
    (next) => async (args) => {
      if (headers["x-bf-vk"]) args.request.headers["x-bf-vk"] = headers["x-bf-vk"];
      if (headers["x-bf-env"]) args.request.headers["x-bf-env"] = headers["x-bf-env"];
      for (const [k, v] of Object.entries(headers)) {
        if (k !== "x-bf-vk" && k !== "x-bf-env") args.request.headers[k] = v;
      }
      return next(args);
    },
    { step: "build", name: "finopsHeaders" },
  );
  return client;
}

const decoder = new TextDecoder();

async function run(job) {
  const client = makeClient(job);
  const start = performance.now();
  const ms = () => Math.round((performance.now() - start) * 10) / 10;
  const meta = (r) => ({ requestId: r.$metadata?.requestId, httpStatusCode: r.$metadata?.httpStatusCode });
  try {
    switch (job.op) {
      case "converse": {
        const r = await client.send(new ConverseCommand({ modelId: job.modelId, messages: job.messages,
                                                          ...(job.params ?? {}) }));
        const text = (r.output?.message?.content ?? []).map((b) => b.text ?? "").join("");
        return { ok: true, ...meta(r), text, usage: r.usage, stopReason: r.stopReason, t: ms() };
      }
      case "converseStream": {
        const r = await client.send(new ConverseStreamCommand({ modelId: job.modelId, messages: job.messages,
                                                                ...(job.params ?? {}) }));
        const events = [];
        for await (const ev of r.stream) {
          const type = Object.keys(ev).find((k) => ev[k] !== undefined);
          events.push({ t: ms(), type, data: ev[type] });
        }
        return { ok: true, ...meta(r), events, t: ms() };
      }
      case "invokeModel": {
        const r = await client.send(new InvokeModelCommand({
          modelId: job.modelId, contentType: "application/json", accept: "application/json",
          body: JSON.stringify(job.body) }));
        return { ok: true, ...meta(r), contentType: r.contentType, body: JSON.parse(decoder.decode(r.body)), t: ms() };
      }
      case "invokeModelWithResponseStream": {
        const r = await client.send(new InvokeModelWithResponseStreamCommand({
          modelId: job.modelId, contentType: "application/json", accept: "application/json",
          body: JSON.stringify(job.body) }));
        const events = [];
        for await (const ev of r.body) {
          const type = Object.keys(ev).find((k) => ev[k] !== undefined);
          const data = type === "chunk" ? JSON.parse(decoder.decode(ev.chunk.bytes)) : ev[type];
          events.push({ t: ms(), type, data });
        }
        return { ok: true, ...meta(r), events, t: ms() };
      }
      default:
        throw new Error(`unknown op ${job.op}`);
    }
  } catch (err) {
    if (!err.$metadata) throw err; // not an answer from the service: a bug here or in the transport
    return { ok: false, name: err.name, httpStatusCode: err.$metadata.httpStatusCode,
             requestId: err.$metadata.requestId, message: err.message, fault: err.$fault, t: ms() };
  } finally {
    client.destroy();
  }
}

try {
  const result = await run(await readJob());
  process.stdout.write(JSON.stringify(result) + "\n");
} catch (err) {
  process.stderr.write(`${err?.stack ?? err}\n`);
  process.exit(2);
}
