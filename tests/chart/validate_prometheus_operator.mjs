// Validates prometheus-operator objects (ServiceMonitor, PodMonitor, PrometheusRule) with the validators of
// @kubernetes-models/prometheus-operator, generated from prometheus-operator's API types (the source its CRD
// schemas are generated from). Reads a JSON array of objects on stdin; prints a JSON array of
// {kind, name, error} with error null when the object is valid.
//   node validate_prometheus_operator.mjs <node_modules directory>
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const modules = process.argv[2];
const objects = JSON.parse(readFileSync(0, "utf8"));
const results = [];
for (const obj of objects) {
  const [group, version] = obj.apiVersion.split("/");
  const file = join(modules, "@kubernetes-models/prometheus-operator", group, version, `${obj.kind}.js`);
  let error = null;
  try {
    const Model = (await import(pathToFileURL(file).href))[obj.kind];
    new Model(obj).validate();
  } catch (exc) {
    error = String(exc && exc.message ? exc.message : exc);
  }
  results.push({ kind: obj.kind, name: obj.metadata?.name ?? "", error });
}
process.stdout.write(JSON.stringify(results));
