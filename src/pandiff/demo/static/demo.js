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

function showWarning(messages) {
  $("warning").textContent = (messages || []).join(" ");
  $("warning").hidden = !$("warning").textContent;
}

// Old answers never stay on screen under another mode's controls.
function clearResults() {
  $("results").replaceChildren();
  $("given").hidden = true;
  $("download-row").hidden = true;
  $("status").textContent = "";
  showError("");
  showWarning([]);
}

function legendItems(list, legend) {
  list.replaceChildren();
  legend.forEach((entry) => {
    const item = document.createElement("li");
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = entry.color;
    item.append(swatch, document.createTextNode(entry.label));
    list.appendChild(item);
  });
  list.dataset.text = legend.map((e) => e.label).join(", ");
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
    legendItems(node.querySelector(".legend"), sample.legend || []);
    results.appendChild(node);
  });
  $("given").hidden = !answer.given_map;
  if (answer.given_map) {
    $("given-map").src = answer.given_map;
    $("given-name").textContent = `(${answer.given_name})`;
  }
  showWarning(answer.warnings);
  $("download").href = answer.download;
  $("download-row").hidden = false;
}

async function onSubmit(event) {
  event.preventDefault();
  showError("");
  showWarning([]);
  const button = $("generate");
  button.disabled = true;
  $("status").textContent = "generating\u2026";
  try {
    const body = readSettings();
    const url = { generate: "/api/generate", map2image: "/api/map2image", segment: "/api/segment" }[mode()];
    if (mode() === "map2image") {
      Object.assign(body, await mapUpload());
    }
    if (mode() === "segment") {
      const file = $("image-file").files[0];
      if (!file) {
        throw new Error("choose an image to segment");
      }
      body.image = await readFile(file);
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
  $("upload").hidden = mode() !== "map2image";
  $("image-upload").hidden = mode() !== "segment";
  $("prompt").required = mode() !== "segment";
  $("generate").textContent = { generate: "Generate", map2image: "Draw image", segment: "Draw map" }[mode()];
  clearResults();
}

function showVocabulary(vocabulary) {
  if (!vocabulary) {
    return;
  }
  vocabulary.examples.forEach((example) => {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = example;
    button.addEventListener("click", () => {
      $("prompt").value = example;
      $("prompt-count").textContent = example.length;
    });
    $("examples").appendChild(button);
  });
  vocabulary.lines.forEach((line) => {
    const item = document.createElement("li");
    item.textContent = line;
    $("words").appendChild(item);
  });
  $("vocabulary").hidden = false;
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
  showVocabulary(config.vocabulary);
}

document.addEventListener("DOMContentLoaded", () => {
  $("controls").addEventListener("submit", onSubmit);
  document.querySelectorAll("input[name=mode]").forEach((r) => r.addEventListener("change", onModeChange));
  $("prompt").addEventListener("input", () => {
    $("prompt-count").textContent = $("prompt").value.length;
  });
  loadConfig().catch((error) => showError(`cannot read the demo's settings: ${error.message}`));
});
