// The demo page: reads the controls, calls the server's JSON API, shows image / map / overlay.
// Talks only to the server that served the page (its Content-Security-Policy allows nothing else).
"use strict";

const $ = (id) => document.getElementById(id);

function mode() {
  return document.querySelector("input[name=mode]:checked").value;
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

// Whole numbers are sent as integers and empty scales as null (the model's default), so the
// server's checks see exactly what the user typed.
function readSettings() {
  const int = (id) => Number.parseInt($(id).value, 10);
  const scale = (id) => ($(id).value.trim() === "" ? null : Number($(id).value));
  return {
    prompt: $("prompt").value,
    steps: int("steps"),
    guidance: scale("guidance"),
    map_guidance: scale("map-guidance"),
    seed: int("seed"),
    num_images: int("num-images"),
  };
}

function readFile(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(new Error(`cannot read ${file.name}`));
    reader.readAsDataURL(file);
  });
}

async function mapUpload() {
  const zip = $("zip-file").files[0];
  if (zip) {
    return { zip: await readFile(zip), index: Number.parseInt($("zip-index").value || "0", 10) };
  }
  const png = $("png-file").files[0];
  const json = $("json-file").files[0];
  if (!png || !json) {
    throw new Error("choose an export zip, or a panoptic PNG and its JSON");
  }
  return { map_png: await readFile(png), map_json: await readFile(json), map_name: png.name };
}

async function postJSON(url, body) {
  const response = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  let payload;
  try {
    payload = await response.json();
  } catch {
    throw new Error(`the server answered ${response.status} without a readable message`);
  }
  if (!response.ok) {
    throw new Error(payload.error || `the server answered ${response.status}`);
  }
  return payload;
}

function showResults(answer) {
  const results = $("results");
  results.replaceChildren();
  const template = $("sample-template");
  answer.samples.forEach((sample, i) => {
    const node = template.content.cloneNode(true);
    node.querySelector(".image").src = sample.image;
    node.querySelector(".map").src = sample.map;
    node.querySelector(".overlay").src = sample.overlay;
    node.querySelector("figcaption").textContent =
      `#${i + 1} "${sample.prompt}" (map: ${sample.segments})`;
    results.appendChild(node);
  });
  $("given").hidden = !answer.given_map;
  if (answer.given_map) {
    $("given-map").src = answer.given_map;
    $("given-name").textContent = `(${answer.given_name})`;
  }
  $("download").href = answer.download;
  $("download-row").hidden = false;
}

async function onSubmit(event) {
  event.preventDefault();
  showError("");
  const button = $("generate");
  button.disabled = true;
  $("status").textContent = "generating\u2026";
  try {
    const body = readSettings();
    const url = mode() === "map2image" ? "/api/map2image" : "/api/generate";
    if (mode() === "map2image") {
      Object.assign(body, await mapUpload());
    }
    const answer = await postJSON(url, body);
    showResults(answer);
    $("status").textContent = `done in ${answer.seconds} s`;
  } catch (error) {
    showError(error.message);
    $("status").textContent = "";
  } finally {
    button.disabled = false;
  }
}

function onModeChange() {
  const mapMode = mode() === "map2image";
  $("upload").hidden = !mapMode;
  $("generate").textContent = mapMode ? "Draw image" : "Generate";
}

async function loadConfig() {
  const response = await fetch("/api/config");
  const config = await response.json();
  $("prompt").maxLength = config.max_prompt_chars;
  $("prompt-max").textContent = config.max_prompt_chars;
  $("steps").max = config.max_steps;
  $("num-images").max = config.max_images;
  $("steps").value = config.defaults.steps;
  $("guidance").value = config.defaults.guidance;
  $("map-guidance").value = config.defaults.map_guidance;
  $("seed").value = config.defaults.seed;
  $("num-images").value = config.defaults.num_images;
  $("model-info").textContent =
    `Model: ${config.model} (${config.image_size} px images, ${config.map_size} px maps).`;
}

document.addEventListener("DOMContentLoaded", () => {
  $("controls").addEventListener("submit", onSubmit);
  document.querySelectorAll("input[name=mode]").forEach((r) => r.addEventListener("change", onModeChange));
  $("prompt").addEventListener("input", () => {
    $("prompt-count").textContent = $("prompt").value.length;
  });
  loadConfig().catch((error) => showError(`cannot read the demo's settings: ${error.message}`));
});
