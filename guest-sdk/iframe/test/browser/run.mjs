// Opens the host page in headless Chromium and prints what the embedded iframe reported (JSON).
// Usage: node test/browser/run.mjs <host page URL>. Chromium: $CHROMIUM or /usr/bin/chromium.
import { chromium } from "playwright-core";

const url = process.argv[2];
if (!url) throw new Error("usage: node test/browser/run.mjs <host page URL>");
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu"],
});
try {
  const page = await browser.newPage();
  const problems = [];
  page.on("console", (message) => {
    if (message.type() === "error") problems.push(`${message.text()} at ${message.location().url}`);
  });
  page.on("pageerror", (error) => problems.push(String(error)));
  await page.goto(url);
  await page.waitForSelector("#result[data-done]", { state: "attached", timeout: 30_000 });
  const result = JSON.parse(await page.textContent("#result"));
  console.log(JSON.stringify({ result, problems }));
} finally {
  await browser.close();
}
