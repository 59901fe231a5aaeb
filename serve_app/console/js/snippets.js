// "Copy as curl" and "Copy as Python (openai SDK)" for exactly the request the console
// made. Images the request carried are named files (image.png, mask.png) that the
// console offers for download beside the code; the key is read from $IMAGE_SERVICE_KEY,
// never written into the code.

import { API_ROOT, apiKey } from "./api.js";

const OPENAI_GENERATE = new Set([
  "model", "prompt", "n", "size", "response_format", "output_format", "output_compression",
  "user", "background", "moderation", "quality", "stream", "partial_images",
]);
const OPENAI_EDIT = new Set([
  "model", "prompt", "n", "size", "response_format", "output_format", "output_compression",
  "user", "background", "quality", "stream", "partial_images", "input_fidelity",
]);

/**
 * A request as the console made it:
 *   {kind: "generate" | "edit" | "chat" | "json", method, path, body, files, stream}
 * `files` maps a file name to the Blob it stands for: an edit's image and mask, a chat's
 * picture (in `body`, its data URL is replaced by "@file:<name>").
 */
export function curlFor(request) {
  const url = new URL(request.path.replace(/^\//, ""), API_ROOT).toString();
  // -d and -F make curl POST; any other method is said.
  const implied = request.method === "GET" || (request.method === "POST" && request.body !== undefined);
  const lines = [`curl -sS${request.stream ? " -N" : ""}${implied ? "" : ` -X ${request.method}`} ${url}`];
  if (apiKey()) lines.push(`-H "Authorization: Bearer $IMAGE_SERVICE_KEY"`);
  if (request.kind === "edit") {
    // The form the OpenAI SDK sends: scalar fields, the image and mask as files.
    for (const [name, value] of Object.entries(request.body)) {
      if (name === "images" || name === "mask") continue;
      const text = typeof value === "string" ? value : JSON.stringify(value);
      lines.push(`-F ${shellQuote(`${name}=${text}`)}`);
    }
    for (const name of Object.keys(request.files)) {
      lines.push(`-F ${name.startsWith("mask") ? "mask" : "image"}=@${name}`);
    }
    return join(lines);
  }
  if (request.body === undefined) return join(lines);
  lines.push(`-H "Content-Type: application/json"`);
  const json = JSON.stringify(request.body, null, 2);
  const files = Object.keys(request.files || {});
  if (files.length === 0) {
    lines.push(`-d @- <<'JSON'\n${json}\nJSON`);
    return join(lines);
  }
  // The picture goes in as a data URL made by the shell: an unquoted here-document, with
  // every other `$`, backtick and backslash escaped.
  const escaped = json.replace(/[\\$`]/g, (c) => `\\${c}`);
  const body = escaped.replace(/"@file:([\w.-]+)"/g, (_, name) => `"data:${mediaType(name)};base64,$(base64 -w0 ${name})"`);
  lines.push(`-d @- <<JSON\n${body}\nJSON`);
  return join(lines);
}

export function pythonFor(request) {
  const head = [
    "import base64",
    "import os",
    "",
    "from openai import OpenAI",
    "",
    `client = OpenAI(base_url=${py(new URL("v1", API_ROOT).toString())}, api_key=${apiKey() ? 'os.environ["IMAGE_SERVICE_KEY"]' : '"unused-locally"'})`,
  ];
  const body = request.body || {};
  if (request.kind === "generate" || request.kind === "edit") {
    const known = request.kind === "generate" ? OPENAI_GENERATE : OPENAI_EDIT;
    const args = [];
    const extra = {};
    for (const [name, value] of Object.entries(body)) {
      if (name === "images" || name === "mask") continue;
      if (known.has(name)) args.push(`    ${name}=${py(value)},`);
      else extra[name] = value;
    }
    if (request.kind === "edit") {
      for (const name of Object.keys(request.files)) {
        args.push(`    ${name.startsWith("mask") ? "mask" : "image"}=open(${py(name)}, "rb"),`);
      }
    }
    if (Object.keys(extra).length) args.push(`    extra_body=${py(extra, 4)},  # this service's extensions`);
    const method = request.kind === "generate" ? "generate" : "edit";
    const lines = [...head, "", `${request.stream ? "stream" : "result"} = client.images.${method}(`, ...args, ")"];
    if (request.stream) {
      lines.push(
        "for event in stream:",
        '    if event.type.endswith("partial_image"):',
        '        print("preview", event.partial_image_index, "of image", event.model_extra["index"])',
        "    else:",
        '        name = f"image-{event.model_extra[\'index\']}.png"',
        "        with open(name, \"wb\") as out:",
        "            out.write(base64.b64decode(event.b64_json))",
        '        print(name, "seed", event.model_extra["seed"])',
      );
    } else {
      lines.push(
        "for i, image in enumerate(result.data):",
        '    with open(f"image-{i}.png", "wb") as out:',
        "        out.write(base64.b64decode(image.b64_json))",
        '    print(f"image-{i}.png", "seed", image.model_extra["seed"])',
      );
    }
    return lines.join("\n");
  }
  if (request.kind === "chat") {
    const files = Object.keys(request.files || {});
    const lines = [...head, ""];
    files.forEach((name, i) => lines.push(`image_${i} = base64.b64encode(open(${py(name)}, "rb").read()).decode()`));
    let args = Object.entries(body).map(([name, value]) => `    ${name}=${py(value, 4)},`).join("\n");
    files.forEach((name, i) => {
      args = args.replace(py(`@file:${name}`), `f"data:${mediaType(name)};base64,{image_${i}}"`);
    });
    lines.push("completion = client.chat.completions.create(", args, ")", "print(completion.choices[0].message.content)");
    return lines.join("\n");
  }
  // Routes the SDK has no method for (jobs): its client still sends them, with the key.
  const call = request.method === "POST"
    ? `client.post(${py(request.path.replace(/^\/v1/, ""))}, body=${py(request.body ?? {}, 0)}, cast_to=httpx.Response)`
    : `client.${request.method.toLowerCase()}(${py(request.path.replace(/^\/v1/, ""))}, cast_to=httpx.Response)`;
  return [
    ...head.slice(0, 3), "import httpx", ...head.slice(3), "",
    `response = ${call}`,
    "print(response.json())",
  ].join("\n");
}

function mediaType(name) {
  const extension = name.split(".").pop();
  return `image/${extension === "jpg" ? "jpeg" : extension}`;
}

function join(lines) {
  return lines.join(" \\\n  ");
}

function shellQuote(text) {
  return `'${text.replace(/'/g, "'\\''")}'`;
}

/** A JSON value as a Python literal, indented from `indent` spaces. */
export function py(value, indent = 0) {
  if (value === null || value === undefined) return "None";
  if (value === true) return "True";
  if (value === false) return "False";
  if (typeof value === "number" || typeof value === "string") return JSON.stringify(value);
  const pad = " ".repeat(indent + 4);
  const end = " ".repeat(indent);
  if (Array.isArray(value)) {
    if (value.length === 0) return "[]";
    return `[\n${value.map((item) => pad + py(item, indent + 4)).join(",\n")},\n${end}]`;
  }
  const entries = Object.entries(value);
  if (entries.length === 0) return "{}";
  return `{\n${entries.map(([k, v]) => `${pad}${JSON.stringify(k)}: ${py(v, indent + 4)}`).join(",\n")},\n${end}}`;
}
