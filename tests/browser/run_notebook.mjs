// Open a notebook in JupyterLab with Debian's Chromium, run every cell, poke the explorer, take screenshots.
//
//   node run_notebook.mjs LAB_URL NOTEBOOK_PATH SCREENSHOT_DIR REQUEST_ID
//
// Prints one JSON object on stdout with what the page showed; the pytest test asserts on it.
// Every wait has a deadline, so a broken page fails the run instead of hanging it.

import { chromium } from "playwright-core";

const [labUrl, notebookPath, shots, requestId] = process.argv.slice(2);
const STEP_MS = 90_000;
const result = { steps: [] };

function step(name) {
  result.steps.push({ name, at: Date.now() });
  process.stderr.write(`browser: ${name}\n`);
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
  ],
});
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  page.setDefaultTimeout(STEP_MS);
  page.on("pageerror", (err) => process.stderr.write(`page error: ${err.message}\n`));

  step("open");
  await page.goto(`${labUrl}/lab/tree/${notebookPath}`);
  await page.waitForFunction(() => window.jupyterapp !== undefined);
  await page.locator(".jp-Notebook .jp-Cell").first().waitFor();
  // the kernel must be up before "run all", or the first cells queue behind its start-up
  await page.waitForFunction(() => {
    const app = window.jupyterapp;
    const panel = app.shell.currentWidget;
    const kernel = panel && panel.sessionContext && panel.sessionContext.session
      && panel.sessionContext.session.kernel;
    return kernel && kernel.status === "idle";
  });

  step("run all");
  await page.evaluate(() => window.jupyterapp.commands.execute("notebook:run-all-cells"));
  // done when the last cell has an execution count and nothing is queued
  await page.waitForFunction(() => {
    const prompts = [...document.querySelectorAll(".jp-Notebook .jp-CodeCell .jp-InputPrompt")];
    const last = prompts[prompts.length - 1];
    return prompts.length > 0 && !prompts.some((p) => p.textContent.includes("*"))
      && /\[\d+\]/.test(last.textContent);
  }, null, { timeout: 240_000, polling: 500 });
  result.errors = await page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
    .allTextContents();
  result.tracebacks = await page.locator(".jp-RenderedText[data-mime-type='application/vnd.jupyter.error']")
    .count();
  result.findings = await page.locator(".jp-Cell").last().locator(".jp-OutputArea-output").allTextContents();

  step("figures");
  const plots = page.locator(".jp-Notebook .js-plotly-plot");
  await plots.nth(7).waitFor();
  result.figures = await plots.count();
  result.figureTitles = await page.locator(".jp-Notebook .js-plotly-plot .gtitle").allTextContents();
  await page.screenshot({ path: `${shots}/notebook-end.png` });
  await plots.first().scrollIntoViewIfNeeded();
  await plots.first().screenshot({ path: `${shots}/error-heatmap.png` });

  step("explorer");
  const explorer = page.locator(".mcptrace-explorer");
  await explorer.waitFor();
  await explorer.scrollIntoViewIfNeeded();
  await explorer.locator(".js-plotly-plot").first().waitFor();
  result.explorerTitlesBefore = await explorer.locator(".gtitle").allTextContents();
  const box = explorer.locator("input[placeholder='req-…']");
  await box.fill(requestId);
  await box.press("Enter");
  const expected = `Call chain ${requestId}`;
  await explorer.locator(".gtitle", { hasText: expected }).waitFor();
  result.explorerTitlesAfter = await explorer.locator(".gtitle").allTextContents();
  result.explorerText = await explorer.innerText();
  await explorer.screenshot({ path: `${shots}/explorer.png` });
  await page.screenshot({ path: `${shots}/notebook-explorer.png`, fullPage: false });
  step("done");
} catch (err) {
  result.failure = String(err && err.stack || err);
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(result) + "\n");
