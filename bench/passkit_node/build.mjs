// The Node side of `python -m bench passes`: the same store card built with passkit-generator, timed.
//
//     node bench/passkit_node/build.mjs JOB.json
//
// JOB.json is written by bench/passes.py:
//     model         a .pass folder: pass.json without the per-pass keys, and the image files
//     certificates  paths of the PEM files: wwdr, signerCert, signerKey (the ones the Python builder uses)
//     passes        per-pass changes, used in turn: {overrides, barcodes, fields: {section: [field, ...]}}
//     count         build at most this many passes in the measured window ...
//     seconds       ... or stop once this many seconds have passed
//     warmup        passes built (and thrown away) before the window, so V8 has compiled the hot paths
//     sample        where to write one pass built from passes[0], for bench/passes.py to verify
//
// The model is read from disk once and kept as a PKPass, then each pass is PKPass.from(template, overrides):
// the way the package's README says to serve passes at run time, and the fastest it offers.
// Prints one JSON object on stdout: node and package versions, passes built, seconds (wall and CPU), warnings.

import { readFileSync, writeFileSync } from "node:fs";
import { performance } from "node:perf_hooks";
import { PKPass } from "passkit-generator";

const packageVersion = JSON.parse(
	readFileSync(new URL("./node_modules/passkit-generator/package.json", import.meta.url), "utf-8"),
).version;

// passkit-generator reports a dropped pass.json, a missing icon and the like with console.warn and carries
// on; collect them so the Python side can refuse to compare a pass that lost something.
const warnings = new Set();
console.warn = (...parts) => warnings.add(parts.map(String).join(" "));

async function buildPass(template, change) {
	const pass = await PKPass.from(template, change.overrides);
	pass.setBarcodes(...change.barcodes);
	const style = pass.types[0];
	for (const [section, fields] of Object.entries(change.fields)) {
		// Emptied and refilled in order, so the card reads exactly like the Python builder's.
		style[section].length = 0;
		style[section].push(...fields);
	}
	return pass.getAsBuffer();
}

async function main() {
	const job = JSON.parse(readFileSync(process.argv[2], "utf-8"));
	const certificates = {
		wwdr: readFileSync(job.certificates.wwdr),
		signerCert: readFileSync(job.certificates.signerCert),
		signerKey: readFileSync(job.certificates.signerKey),
	};
	const template = await PKPass.from({ model: job.model, certificates });

	writeFileSync(job.sample, await buildPass(template, job.passes[0]));
	for (let i = 0; i < job.warmup; i++) {
		await buildPass(template, job.passes[i % job.passes.length]);
	}

	let built = 0;
	let bytes = 0;
	const deadline = job.seconds * 1000;
	const cpuStart = process.cpuUsage();
	const start = performance.now();
	while (built < job.count && performance.now() - start < deadline) {
		bytes += (await buildPass(template, job.passes[built % job.passes.length])).length;
		built++;
	}
	const seconds = (performance.now() - start) / 1000;
	const cpu = process.cpuUsage(cpuStart);

	process.stdout.write(
		JSON.stringify({
			node: process.version,
			passkitGenerator: packageVersion,
			passes: built,
			seconds,
			cpuSeconds: (cpu.user + cpu.system) / 1e6,
			averageBytes: built ? bytes / built : 0,
			warnings: [...warnings],
		}) + "\n",
	);
}

main().catch((error) => {
	for (const warning of warnings) {
		process.stderr.write(`passkit-generator warned: ${warning}\n`);
	}
	process.stderr.write(`${error.stack || error}\n`);
	process.exit(1);
});
