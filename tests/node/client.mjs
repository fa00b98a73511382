// The official TypeScript SDK client, driving a server through `mcptrace proxy`.
//
//   node client.mjs stdio COMMAND [ARGS...]   start the proxy (which starts the server) over stdio
//   node client.mjs http URL                  connect to the proxy over Streamable HTTP
//
// It answers the server's own requests (sampling, elicitation, roots), exercises requests with
// progress, a task (the experimental tasks API) and logging, and prints one JSON summary on stdout.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import {
  CreateMessageRequestSchema,
  ElicitRequestSchema,
  ListRootsRequestSchema,
  LoggingMessageNotificationSchema,
} from "@modelcontextprotocol/sdk/types.js";

const [mode, ...rest] = process.argv.slice(2);
const transport =
  mode === "stdio"
    ? new StdioClientTransport({ command: rest[0], args: rest.slice(1), env: process.env, stderr: "inherit" })
    : new StreamableHTTPClientTransport(new URL(rest[0]));

const client = new Client(
  { name: "ts-sdk-client", version: "1.0.0" },
  { capabilities: { sampling: {}, elicitation: { form: {} }, roots: { listChanged: true } } },
);
const seen = { sampling: 0, elicitation: 0, roots: 0, logging: 0 };
client.setRequestHandler(CreateMessageRequestSchema, async () => {
  seen.sampling += 1;
  return { model: "test-model", role: "assistant", content: { type: "text", text: "sampled by the client" } };
});
client.setRequestHandler(ElicitRequestSchema, async () => {
  seen.elicitation += 1;
  return { action: "accept", content: { name: "Ada", check: true } };
});
client.setRequestHandler(ListRootsRequestSchema, async () => {
  seen.roots += 1;
  return { roots: [{ uri: "file:///tmp/project", name: "project" }] };
});
client.setNotificationHandler(LoggingMessageNotificationSchema, async () => {
  seen.logging += 1;
});

const text = (result) => (result.content ?? []).map((c) => c.text ?? "").join(" ");
const summary = {};
try {
  await client.connect(transport);
  summary.server = client.getServerVersion()?.name;
  summary.tools = (await client.listTools()).tools.map((t) => t.name);
  const echo = await client.callTool({ name: "echo", arguments: { message: "from typescript" } });
  summary.echo = text(echo);
  summary.requestId = echo._meta?.["mcptrace/mcp_request_id"] ?? null;
  let progress = 0;
  await client.callTool(
    { name: "trigger-long-running-operation", arguments: { duration: 1, steps: 3 } },
    undefined,
    { onprogress: () => { progress += 1; } },
  );
  summary.progress = progress;
  summary.sampling = text(await client.callTool({ name: "trigger-sampling-request", arguments: { prompt: "hi" } }));
  summary.elicitation = text(await client.callTool({ name: "trigger-elicitation-request", arguments: {} }));
  summary.roots = text(await client.callTool({ name: "get-roots-list", arguments: {} }));
  await client.setLoggingLevel("debug");
  await client.callTool({ name: "toggle-simulated-logging", arguments: {} });
  const statuses = [];
  let taskResult = null;
  for await (const message of client.experimental.tasks.callToolStream(
    { name: "simulate-research-query", arguments: { topic: "proxies" } },
  )) {
    if (message.type === "taskCreated" || message.type === "taskStatus") statuses.push(message.task.status);
    if (message.type === "result") taskResult = text(message.result);
    if (message.type === "error") taskResult = `error: ${message.error.message}`;
  }
  summary.taskStatuses = statuses;
  summary.taskResult = taskResult;
  await client.callTool({ name: "toggle-simulated-logging", arguments: {} });
  summary.seen = seen;
  await client.close();
  process.stdout.write(JSON.stringify(summary) + "\n");
} catch (error) {
  process.stdout.write(JSON.stringify({ ...summary, error: String(error?.stack ?? error), seen }) + "\n");
  await client.close().catch(() => {});
  process.exitCode = 1;
}
